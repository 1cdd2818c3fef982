"""The FUSE adapter: a store's artifacts as an ordinary directory tree, its versions read-only and read
lazily, and one writable `staging/` directory per artifact, sealed into the next version by the daemon.

    mount.py           the daemon's life: mount, serve, poll the catalog, signals, unmount; `--daemon`
    mountpoint.py      the mount point as the kernel sees it: checks, stale mounts, readahead, unmounting
    ops.py             pyfuse3.Operations: FUSE requests mapped onto the tree, the reader and staging_ops
    errnos.py          how every handler's failures become errnos (and one log line)
    tree.py            inodes: root, artifacts, versions, alias symlinks, version contents; attributes, xattrs
    notify.py          telling the kernel to forget entries and attributes made stale
    reader.py          `read` of open version files: sequential and directory-order prefetch
    chunks.py          chunks from memory, the LMDB cache or the store: single flight, off the trio loop
    areas.py           the staging directories: one StagingArea per artifact, placed in the inode space
    staging_ops.py     FUSE operations inside staging directories, onto the artifact's StagingArea
    control_server.py  the control socket: seal, status and discard requests of the staging directories

Nothing below this package knows FUSE exists.
"""
