"""Unchanged files of a staging area's base version, read from the version's chunks (core/content.py)."""

from __future__ import annotations

from collections import OrderedDict

from artfs.core.content import ChunkReader, FileLayout
from artfs.core.manifest import Entry


class BaseFiles:
    """Reads and copies up base files through a ChunkReader, keeping the layouts of recent ones. Thread-safe
    (a layout is built whole before it is shared; losing a race builds it twice)."""

    def __init__(self, reader: ChunkReader, packs: list[str], max_layouts: int = 256) -> None:
        self.reader = reader
        self.packs = packs
        self._layouts: OrderedDict[str, FileLayout] = OrderedDict()
        self._max_layouts = max_layouts

    def layout(self, entry: Entry) -> FileLayout:
        got = self._layouts.get(entry.path)
        if got is None:
            got = self._layouts[entry.path] = FileLayout.of_entry(entry, self.packs)
            while len(self._layouts) > self._max_layouts:
                self._layouts.popitem(last=False)
        return got

    def read(self, entry: Entry, offset: int, size: int) -> bytes:
        return self.reader.read(self.layout(entry), offset, size)

    def copy_to(self, entry: Entry, fd: int, limit: int) -> None:
        """Write the first `limit` bytes of a base file into `fd` (a copy-up), without filling the cache."""
        self.reader.copy_to(self.layout(entry), fd, limit)
