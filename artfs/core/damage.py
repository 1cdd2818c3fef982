"""Bad copies in a store: quarantined, so that no commit dedups against them again, and relocated, so that
readers of versions that name them find a good copy.

Dedup trusts a chunk location (digest, pack, offset) without reading it: that is what makes a commit of
unchanged content cost nothing. The price is that a damaged copy (a flipped byte, a truncated pack) would
be adopted by every later commit of the same content, and re-putting the intact data could never repair
the artifact. So whoever reads a location and finds it bad (content.ChunkReader, in a mount, `get`, a
copy-up) reports it here: the machine's own chunk index forgets it at once, and a record under
`quarantine/<digest>/<pack>` (store_keys.py) tells every other machine. A commit lists those records once
and uploads quarantined content afresh, into a new pack; the bad copy is left for garbage collection.

A location, not a digest, is quarantined: the same content uploaded again lands in another pack, and that
copy is good. Records are written with create-if-absent and never changed, like every record in the store.

Versions are immutable, so a version whose manifest names a bad copy would stay unreadable forever, even
once the content is in the store again. `artfs verify --repair` (verify.py) therefore writes a relocation
record, `relocations/<digest>/<bad pack>` → a good location of the same content (found in another version,
or uploaded afresh from a machine's cache). A reader consults it only when a copy fails verification or its
pack is gone (content.ChunkReader), and verifies what it finds there like any chunk: a relocation can make
a read succeed, never make it return other bytes than the digest the manifest names.
"""

from __future__ import annotations

import logging
import threading
import time

from artfs.core.index import StoreIndex
from artfs.core.packs import ChunkRef
from artfs.core.records import QuarantineRecord, RelocationRecord, creator, decode_relocation, encode
from artfs.core.store_keys import QUARANTINE, parse_quarantine_key, quarantine_key, relocation_key
from artfs.errors import StoreError, StoreNotFound
from artfs.storage.store import Store

log = logging.getLogger(__name__)


class StoreDamage:
    """The quarantine and relocations of one store, seen from one machine (its chunk index). Thread-safe,
    blocking."""

    def __init__(self, store: Store, index: StoreIndex) -> None:
        self.store = store
        self.index = index
        self._relocated: dict[tuple[bytes, str], ChunkRef] = {}
        self._lock = threading.Lock()

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

    def relocated(self, ref: ChunkRef) -> ChunkRef | None:
        """Where a good copy of `ref`'s content lives, if a repair recorded one (None otherwise)."""
        key = (ref.digest, ref.pack)
        with self._lock:
            known = self._relocated.get(key)
        if known is not None:
            return known
        try:
            data = self.store.get(relocation_key(ref.digest, ref.pack))
        except StoreNotFound:
            return None
        rec = decode_relocation(data, ref.digest)
        to = ChunkRef(ref.digest, rec.pack, rec.offset, rec.stored_len, rec.raw_len, rec.flags)
        with self._lock:
            self._relocated[key] = to
        return to

    def relocate(self, bad: ChunkRef, good: ChunkRef) -> None:
        """Record that `bad`'s content lives (verified) at `good` too."""
        rec = RelocationRecord(bad.digest.hex(), bad.pack, good.pack, good.offset, good.stored_len, good.raw_len,
                               good.flags, time.time(), creator())
        if not self.store.create_if_absent(relocation_key(bad.digest, bad.pack), encode(rec)):
            log.info("chunk %s in pack %s was relocated already", bad.digest.hex(), bad.pack)
