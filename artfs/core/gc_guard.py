"""The writers' side of garbage collection: what a commit checks before it claims a version number.

Writers take no lock. Garbage collection (core/gc.py, which holds the whole safety argument) only deletes
a pack that was condemned (`gc/condemned/<pack>`) at least a margin M ago and that is still unreferenced
in a listing of versions the collector began after that. So a writer that has seen a pack present, in a
LIST of `gc/condemned/` that did not name it, knows the pack cannot disappear before that LIST's time + M;
it claims its version number before that time + M/2 (M/2 left for clocks and slow requests), and from the
claim on the version itself keeps the pack alive. `PackGuard` is that knowledge, per store and process:
- `refresh` lists `gc/condemned/` (one LIST) and reads M (`gc/config.json`); a listing older than M/4 is
  redone before a check, so a claim right after a check always has at least M/4 left;
- `usable` answers dedup (commit.py): a known chunk is reused only if its pack is neither condemned nor
  missing (one HEAD per pack per commit; a pack seen present stays so across listings less than M apart,
  so the check before the claim asks again only about packs it has not seen under its listing);
- `check` answers the claim (repo.py): every pack a manifest names, its own new ones and the ones it reused
  (a stale local index, a staging base, a merge), must be present and not condemned.
A pack that fails either is forgotten by the local known-chunk index, and `replace_packs` uploads the
content of a manifest's bad packs afresh into a new pack (reading it from this machine's cache, or from
the condemned pack, which is still there for a margin) and writes the manifest anew. Costs are per pack,
never per chunk: one LIST per listing, at most one HEAD per referenced pack.
"""

from __future__ import annotations

import logging
import math
import socket
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

import msgspec
import xxhash

from artfs.core.content import ChunkReader
from artfs.core.index import StoreIndex
from artfs.core.manifest import FILE, Header, ManifestWriter
from artfs.core.manifest_file import read_manifest
from artfs.core.packs import ChunkRef, PackBuilder
from artfs.core.records import GcConfig, StagingLease, creator, encode
from artfs.core.store_keys import CONDEMNED, GC_CONFIG, pack_key, parse_condemned_key, staging_lease_key
from artfs.errors import ArtfsError, IntegrityError, StoreError, StoreNotFound
from artfs.storage.store import Store

log = logging.getLogger(__name__)

DEFAULT_MARGIN = 6 * 3600.0  # longer than any commit takes from its first upload to its claim
_HEADS_IN_FLIGHT = 16


def read_config(store: Store) -> GcConfig | None:
    try:
        data = store.get(GC_CONFIG)
    except StoreNotFound:
        return None
    try:
        return msgspec.json.decode(data, type=GcConfig)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise ArtfsError(f"gc configuration {GC_CONFIG} in {store.uri} is unreadable: {e}") from None


def writer_margin(store: Store) -> float:
    """The margin writers assume: the store's current setting (a smaller one than before is stricter)."""
    cfg = read_config(store)
    return cfg.margin if cfg is not None else DEFAULT_MARGIN


def collector_margin(store: Store, now: float) -> float:
    """The margin a collector must wait: after the setting shrank, the old one stays in force for as long
    as it was (a writer may have read it just before the change and be waiting half of it)."""
    cfg = read_config(store)
    if cfg is None:
        return DEFAULT_MARGIN
    if cfg.previous is not None and now < cfg.changed + cfg.previous:
        return max(cfg.margin, cfg.previous)
    return cfg.margin


def set_margin(store: Store, margin: float, now: float | None = None, immediate: bool = False) -> None:
    """Record the store's gc margin. The old one keeps applying to collectors for its own length, unless
    `immediate` (a store no writer is using yet: tests)."""
    if not margin > 0 or math.isinf(margin):
        raise ArtfsError(f"the gc margin must be a positive duration, not {margin}")
    now = time.time() if now is None else now
    old = read_config(store)
    if old is not None and old.margin == margin and old.previous is None:
        return
    previous = None if immediate else collector_margin(store, now)
    store.put(GC_CONFIG, encode(GcConfig(margin, previous if previous != margin else None, now)))


class PackGuard:
    """What this process knows about packs being collected in one store (see the module docstring).
    Thread-safe; blocking (store calls are made without holding the lock)."""

    def __init__(self, store: Store, index: StoreIndex | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.index = index
        self._clock = clock
        self._lock = threading.Lock()
        self._epoch: float | None = None  # when the last listing of gc/condemned/ began (our clock)
        self._margin = DEFAULT_MARGIN
        self._condemned: frozenset[str] = frozenset()
        self._present: dict[str, float] = {}  # pack → the epoch under which it was seen present
        self.requests = 0

    def refresh(self) -> None:
        """List gc/condemned/ and read the margin: one LIST and one GET."""
        started = self._clock()
        margin = writer_margin(self.store)
        condemned = frozenset(p for k in self.store.list(CONDEMNED) if (p := parse_condemned_key(k)))
        with self._lock:
            self.requests += 2
            before, self._epoch = self._epoch, started
            self._margin, self._condemned = margin, condemned
            # Seen present under the previous listing, less than a margin ago, and not condemned in this
            # one: it cannot have been deleted in between (a deletion needs a condemnation M old).
            carry = before is not None and started - before < margin
            self._present = {p: started for p, e in self._present.items()
                             if carry and e == before and p not in condemned}

    def _ensure_fresh(self, within: float) -> None:
        with self._lock:
            stale = self._epoch is None or self._clock() - self._epoch > self._margin * within
        if stale:
            self.refresh()

    def _forget(self, pack: str, why: str) -> None:
        log.warning("pack %s is %s: its content is uploaded again", pack, why)
        if self.index is not None:
            try:
                self.index.forget_pack_chunks(pack)
            except ArtfsError as e:  # the index only speeds dedup up; the check is what protects
                log.warning("%s", e)

    def _head(self, pack: str) -> bool:
        with self._lock:
            self.requests += 1
        return self.store.exists(pack_key(pack))

    def prepare(self) -> None:
        """List gc/condemned/ now unless a recent listing exists: packs uploaded after it need no HEAD."""
        self._ensure_fresh(0.5)

    def usable(self, pack: str) -> bool:
        """May a commit dedup against a chunk in `pack`? Not if it is condemned or gone. Asked of the store
        (a HEAD) whatever this guard knows: a pack can also go by accident, not only by gc, and a commit
        must not adopt it then (commit.py asks once per pack per commit)."""
        self._ensure_fresh(0.5)
        return not self._bad([pack], ask=True)

    def uploaded(self, pack: str, started: float) -> None:
        """This process wrote `pack`, its upload having begun at `started` (this guard's clock): present
        as of the current listing if that listing began before the upload."""
        with self._lock:
            if self._epoch is not None and self._epoch <= started:
                self._present[pack] = self._epoch

    def now(self) -> float:
        return self._clock()

    def check(self, packs: Iterable[str]) -> set[str]:
        """The packs among `packs` that a version must not be claimed with (condemned or missing), with a
        listing recent enough that a claim made right after this has at least M/4 to spare."""
        self._ensure_fresh(0.25)
        return self._bad(list(packs))

    def _bad(self, packs: list[str], ask: bool = False) -> set[str]:
        with self._lock:
            epoch, condemned = self._epoch, self._condemned
            bad = {p for p in packs if p in condemned}
            unknown = [p for p in dict.fromkeys(packs) if p not in bad and (ask or self._present.get(p) != epoch)]
        if len(unknown) > 1:
            with ThreadPoolExecutor(min(_HEADS_IN_FLIGHT, len(unknown)), thread_name_prefix="artfs-head") as pool:
                present = list(pool.map(self._head, unknown))
        else:
            present = [self._head(p) for p in unknown]
        with self._lock:
            for p, ok in zip(unknown, present, strict=True):
                if ok and self._epoch == epoch and epoch is not None:
                    self._present[p] = epoch
                elif not ok:
                    bad.add(p)
        for p in bad:
            self._forget(p, "condemned by garbage collection" if p in condemned else "missing from the store")
        return bad


def replace_packs(store: Store, reader: ChunkReader, guard: PackGuard, manifest_path: str, bad: set[str],
                  tmp_dir: str, index: StoreIndex | None = None) -> tuple[str, Header]:
    """A copy of the manifest at `manifest_path` whose chunks in `bad` packs live in new packs, uploaded
    here: (the new manifest's temp path, its header; the caller owns the file). The content is read from
    this machine's cache or from the bad pack itself (a condemned pack is still there for a margin),
    verified like every read; if neither has it, the commit fails and can simply be run again."""
    header, entries = read_manifest(manifest_path, "the manifest being published")
    writer = ManifestWriter(tmp_dir=tmp_dir)
    moved: dict[bytes, ChunkRef] = {}
    builder: PackBuilder | None = None
    new_refs: list[ChunkRef] = []

    def flush() -> None:
        nonlocal builder
        if builder is None or not len(builder):
            return
        started = guard.now()
        store.put(pack_key(builder.pack_id), b"".join(builder.finish()))
        guard.uploaded(builder.pack_id, started)
        if index is not None:
            index.add_chunks(new_refs)
        new_refs.clear()
        builder = None

    try:
        for e in entries:
            if e.kind != FILE:
                writer.add(e)
                continue
            refs = e.refs(header.packs)
            if not any(r.pack in bad for r in refs):
                writer.add_file(e.path, e.mode, e.mtime_ns, e.size, refs)
                continue
            out = []
            for r in refs:
                if r.pack not in bad:
                    out.append(r)
                    continue
                to = moved.get(r.digest)
                if to is None:
                    try:
                        data = reader.read_chunk(r, populate=False)
                    except IntegrityError as err:
                        raise ArtfsError(
                            f"pack {r.pack} was garbage-collected while this commit ran, and this machine "
                            f"has no other copy of its chunk {r.digest.hex()}; run the command again (it "
                            f"uploads the content afresh): {err}") from None
                    if builder is None:
                        builder = PackBuilder()
                    to = moved[r.digest] = builder.add(r.digest, data)
                    new_refs.append(to)
                    if builder.full:
                        flush()
                out.append(to)
            writer.add_file(e.path, e.mode, e.mtime_ns, e.size, out)
        flush()
        return writer.finish()
    except BaseException:
        writer.close()
        raise


STAGING_LEASE_TTL = 3 * 86400.0  # a staging area whose machine vanished stops protecting its base after this
STAGING_LEASE_RENEW = 3600.0  # a mount rewrites the lease of each open area this often


def staging_area_id(host_dir: str, name: str) -> str:
    """A staging area's name in the store: one per machine, data directory and artifact."""
    return xxhash.xxh3_128_hexdigest(f"{socket.gethostname()}\0{host_dir}\0{name}".encode("utf-8", "surrogateescape"))


class StagingLeases:
    """The leases (`gc/staging/<area id>`) by which the staging areas of one machine keep their base
    versions' chunks alive, even after those versions are deleted (gc.py reads them). Best effort toward an
    unreachable store: a staging area must keep working offline; the next renewal writes it."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self._written: dict[str, tuple[int | None, float]] = {}  # area id → (base, when)
        self._lock = threading.Lock()

    def hold(self, area_id: str, artifact: str, base: int | None, force: bool = True) -> None:
        """Say that the area reads `base` (None: a new artifact, nothing to keep). Without `force`, only
        if the lease on that base is due for renewal."""
        now = self.clock()
        with self._lock:
            last = self._written.get(area_id)
        if not force and last is not None and last[0] == base and now - last[1] < STAGING_LEASE_RENEW:
            return
        rec = StagingLease(artifact, base, now + STAGING_LEASE_TTL, creator())
        try:
            self.store.put(staging_lease_key(area_id), encode(rec))
        except StoreError as e:
            log.warning("cannot record the staging lease of %s (its base's chunks are kept only while it is "
                        "within its retention window): %s", artifact, e)
            return
        with self._lock:
            self._written[area_id] = (base, now)

    def release(self, area_id: str) -> None:
        try:
            self.store.delete(staging_lease_key(area_id))
        except StoreError as e:
            log.warning("cannot remove staging lease %s (it lapses by itself): %s", area_id, e)
        with self._lock:
            self._written.pop(area_id, None)
