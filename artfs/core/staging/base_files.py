"""Unchanged files of a staging area's base version, read from the version's chunks (core/content.py), and
staged references (`artfs ref add`), read the same way from their external source.

A staged reference keeps its chunk refs against a one-entry table [its source token]; here they are
re-numbered into the area's location table: the base manifest's table with the tokens of staged
references appended (never reordered, so an index handed out stays valid for the generation). Seal
resolves every existing entry through that one table (seal.py: `base_packs`), so a staged reference is
written as a reference entry with no new path through the committer."""

from __future__ import annotations

import threading
from collections import OrderedDict

from artfs.core.content import ChunkReader, FileLayout
from artfs.core.manifest import FILE, Entry, content_digest, pack_refs
from artfs.core.packs import FLAG_SOURCE, REF
from artfs.core.references import parse_token


class BaseFiles:
    """Reads and copies up base files through a ChunkReader, keeping the layouts of recent ones. Thread-safe
    (a layout is built whole before it is shared; losing a race builds it twice)."""

    def __init__(self, reader: ChunkReader, packs: list[str], max_layouts: int = 256) -> None:
        self.reader = reader
        self.packs = list(packs)  # our own copy: staged references' tokens are appended to it
        self._index = {p: i for i, p in enumerate(self.packs)}
        self._index_lock = threading.Lock()
        self._layouts: OrderedDict[object, FileLayout] = OrderedDict()
        self._max_layouts = max_layouts

    def layout(self, entry: Entry) -> FileLayout:
        # a reference's label path may be shared by two sources (the same URI, with and without checksum)
        key: object = (entry.path, entry.data) if _is_source(entry) else entry.path
        got = self._layouts.get(key)
        if got is None:
            got = self._layouts[key] = FileLayout.of_entry(entry, self.packs)
            while len(self._layouts) > self._max_layouts:
                self._layouts.popitem(last=False)
        return got

    def read(self, entry: Entry, offset: int, size: int) -> bytes:
        return self.reader.read(self.layout(entry), offset, size)

    def copy_to(self, entry: Entry, fd: int, limit: int) -> None:
        """Write the first `limit` bytes of a base file into `fd` (a copy-up), without filling the cache."""
        self.reader.copy_to(self.layout(entry), fd, limit)

    def reference_entry(self, token: str, chunks: bytes, mode: int, mtime_ns: int, size: int) -> Entry:
        """A staged reference as an entry against `packs` (its token appended on first use). Its path is
        the source's URI, a label for logs; the walk and the mount put the node's own path in its place."""
        with self._index_lock:
            idx = self._index.get(token)
            if idx is None:
                idx = self._index[token] = len(self.packs)
                self.packs.append(token)
        refs = Entry("", FILE, 0, 0, 0, chunks).refs([token])
        data = pack_refs(refs, {token: idx})
        return Entry(parse_token(token).uri, FILE, mode, mtime_ns, size, data,
                     content_digest([r.digest for r in refs]))


def _is_source(entry: Entry) -> bool:
    return len(entry.data) >= REF.size and bool(REF.unpack_from(entry.data)[5] & FLAG_SOURCE)
