"""Telling the kernel to forget what it cached: entries and attributes made stale by a catalog change
(moved aliases, new versions) or by a staging area replaced by a seal, discard or refresh."""

from __future__ import annotations

import errno
import logging

import pyfuse3

from artfs.fs.tree import Invalidation

log = logging.getLogger(__name__)


def invalidate(stale: list[Invalidation]) -> None:
    """Blocking: run in a worker thread. The kernel may make this wait for requests in progress on the
    same inodes, which only the trio loop can finish, so calling it on the loop could deadlock."""
    for what, ino, name in stale:
        try:
            if what == "entry":
                pyfuse3.invalidate_entry(ino, name.encode("utf-8", "surrogateescape"))
            else:
                pyfuse3.invalidate_inode(ino)
        except OSError as e:
            if e.errno != errno.ENOENT:  # ENOENT: the kernel had not cached it
                log.debug("invalidate %s %d %r: %s", what, ino, name, e)
