"""The staging area: a persistent, writable copy-on-write tree over an artifact's latest version, and
sealing it into the next version.

    area.py        StagingArea: built from the parts below; open/refresh/discard/reset, generations in
                   use, and the public surface sealing uses (FUSE-shaped, no FUSE)
    namespace.py   Namespace: lookup, listdir, create, mkdir, symlink, link, unlink, rmdir, rename, forget, walk
    upper.py       UpperTrees: directories made in staging, kept as real directories on disk (their
                   names, attributes and bytes the local filesystem's); demoted into rows when crossed
    files.py       Files: attributes and bytes (read, write, truncate, setattr, fsync, copy-up); DataFiles
    base_files.py  BaseFiles: unchanged files of the base version, read from its chunks (core/content.py)
    spare.py       SpareFiles: new data files made ahead by a thread, so a create only links one in
    nodes.py       NodeTable: the rows of the live generation (all but what upper trees hold), the area lock
                   and modes; plain data (StagedNode, StatFs, Row) and the errno rules for names
    layout.py      where it lives on disk; generations, switched atomically on seal/discard
    seal.py        status; seal_area (candidate → publish or merge → reset), over `SealableArea`
Each module imports only those listed below it. The three-way merge itself is artfs/core/merge.py.
"""

from artfs.core.merge import MergeConflict
from artfs.core.staging.area import StagingArea
from artfs.core.staging.nodes import RENAME_EXCHANGE, RENAME_NOREPLACE, StagedNode, StatFs, WouldBlock

__all__ = [
    "RENAME_EXCHANGE", "RENAME_NOREPLACE", "MergeConflict", "StagedNode", "StagingArea", "StatFs", "WouldBlock",
]
