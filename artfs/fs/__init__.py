"""The FUSE adapter: a store's artifacts and versions as an ordinary, read-only directory tree.

    mount.py       the daemon's life: mount, serve, poll, signals, unmount; `--daemon`
    mountpoint.py  the mount point as the kernel sees it: checks, stale mounts, readahead, unmounting
    ops.py         pyfuse3.Operations: FUSE requests mapped onto the tree and the reader, nothing else
    tree.py        inodes: root, artifacts, versions, alias symlinks, version contents; attributes, xattrs
    catalog.py     what the store holds at the artifact level (one LIST per poll)
    reader.py      `read` of open files: offsets, sequential and directory-order prefetch
    chunks.py      chunks from memory, the LMDB cache or the store: single flight, off the trio loop

Nothing below this package knows FUSE exists.
"""
