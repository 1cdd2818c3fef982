"""Chunk locations that failed verification, so that no commit on any machine dedups against them again.

Dedup trusts a chunk location (digest, pack, offset) without reading it: that is what makes a commit of
unchanged content cost nothing. The price is that a damaged copy (a flipped byte, a truncated pack) would
be adopted by every later commit of the same content, and re-putting the intact data could never repair
the artifact. So whoever reads a location and finds it bad (content.ChunkReader, in a mount, `get`, a
copy-up) reports it here: the machine's own chunk index forgets it at once, and a record under
`quarantine/<digest>/<pack>` (store_keys.py) tells every other machine. A commit lists those records once
and uploads quarantined content afresh, into a new pack; the bad copy is left for garbage collection.

A location, not a digest, is quarantined: the same content uploaded again lands in another pack, and that
copy is good. Records are written with create-if-absent and never changed, like every record in the store.
"""

from __future__ import annotations

import logging
import time

from artfs.core.index import StoreIndex
from artfs.core.packs import ChunkRef
from artfs.core.records import QuarantineRecord, creator, encode
from artfs.core.store_keys import QUARANTINE, parse_quarantine_key, quarantine_key
from artfs.errors import StoreError
from artfs.storage.store import Store

log = logging.getLogger(__name__)


class Quarantine:
    """The quarantine of one store, seen from one machine (its chunk index). Thread-safe, blocking."""

    def __init__(self, store: Store, index: StoreIndex) -> None:
        self.store = store
        self.index = index

    def report(self, ref: ChunkRef, reason: str) -> None:
        """`ref`'s stored copy failed verification: never dedup against it again, here or elsewhere.
        Best effort toward the store (the reader's own error is what its caller needs to see)."""
        self.index.forget_chunk(ref.digest, ref.pack)
        rec = QuarantineRecord(ref.digest.hex(), ref.pack, ref.offset, reason[:500], time.time(), creator())
        try:
            self.store.create_if_absent(quarantine_key(ref.digest, ref.pack), encode(rec))
        except StoreError as e:
            log.warning("cannot record the bad copy of chunk %s in pack %s: %s", ref.digest.hex(), ref.pack, e)
        else:
            log.warning("quarantined chunk %s in pack %s: %s", ref.digest.hex(), ref.pack, reason)

    def locations(self) -> set[tuple[bytes, str]]:
        """Every quarantined (digest, pack), from one LIST of the store."""
        out = set()
        for key in self.store.list(QUARANTINE):
            parsed = parse_quarantine_key(key)
            if parsed is not None:
                out.add(parsed)
        return out
