"""The staging area: a persistent, writable copy-on-write tree over an artifact's latest version, and
sealing it into the next version.

    area.py     StagingArea: the state, open/refresh/discard, generations in use (FUSE-shaped, no FUSE)
    tree.py     names: lookup, listdir, create, mkdir, symlink, unlink, rmdir, rename, forget
    content.py  bytes: read, write, truncate, setattr, fsync; data files; base files from chunks
    nodes.py    shared plain data (Node, StatFs), errno rules for names, row access
    layout.py   where it lives on disk; generations, switched atomically on seal/discard
    seal.py     the staged tree as manifest entries; status; seal (candidate → publish or merge → reset)
The three-way merge itself is artfs/core/merge.py.
"""

from artfs.core.merge import MergeConflict
from artfs.core.staging.area import StagingArea
from artfs.core.staging.nodes import RENAME_EXCHANGE, RENAME_NOREPLACE, Node, StatFs, WouldBlock

__all__ = ["RENAME_EXCHANGE", "RENAME_NOREPLACE", "MergeConflict", "Node", "StagingArea", "StatFs", "WouldBlock"]
