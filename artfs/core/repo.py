"""Artifacts, versions and aliases in a store, and the atomic publish protocol.

The keys this reads and writes are described and built in store_keys.py (the store layout).

Publishing is atomic because of the order: packs, then the manifest, then the version number is claimed
with create-if-absent. Until the claim succeeds nothing is visible; a crash before it leaves only
unreferenced objects (garbage for a later GC). Two writers racing for number n: one wins, the other
sees `False`, re-lists and claims n+1 — both succeed with distinct numbers.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import xxhash

from artfs.core import store_format
from artfs.core.content import ChunkReader
from artfs.core.damage import StoreDamage
from artfs.core.gc_guard import PackGuard, replace_packs
from artfs.core.index import StoreIndex
from artfs.core.manifest import Entry, Header
from artfs.core.manifest_file import read_manifest
from artfs.core.names import Ref, check_alias, check_name, parse_version
from artfs.core.places import Places
from artfs.core.records import (
    TTL,
    AliasEvent,
    FormatRecord,
    LifecycleEvent,
    VersionRecord,
    creator,
    decode_alias,
    decode_lifecycle,
    decode_version,
    encode,
)
from artfs.core.references import pack_ids
from artfs.core.runs import record_output
from artfs.core.store_keys import (
    ALIASES,
    ARTIFACTS,
    DELETED,
    VERSIONS,
    alias_key,
    aliases_prefix,
    artifact_prefix,
    deleted_key,
    deleted_prefix,
    manifest_key,
    parse_record_key,
    record_numbers,
    version_key,
    versions_prefix,
)
from artfs.core.tombstones import VersionState, format_time, is_live, live_aliases, live_numbers, replay
from artfs.errors import ArtfsError, Conflict, IntegrityError, NotFound, StoreNotFound
from artfs.storage.cache import ChunkCache
from artfs.storage.store import Store

log = logging.getLogger(__name__)


class VersionTaken(Conflict):
    """The exact version number asked for was claimed by another writer first."""


class VersionDeleted(NotFound):
    """The version asked for is soft-deleted (restorable, or past the retention window)."""


@dataclass(frozen=True)
class ArtifactView:
    """One artifact's records as one LIST saw them, replayed at `now` (core/tombstones.py): every number
    ever claimed, each one's state, the aliases (also those pointing at deleted versions)."""

    name: str
    numbers: list[int]
    states: dict[int, VersionState]
    alias_events: list[AliasEvent]
    all_aliases: dict[str, int]
    now: float
    alias_seqs: tuple[int, ...] = ()  # the sequence numbers of the alias and lifecycle records listed
    deleted_seqs: tuple[int, ...] = ()  # (Repo.refresh probes the next ones instead of listing again)

    @cached_property
    def live(self) -> list[int]:
        """Computed once per view: a commit asks for `latest` several times."""
        return live_numbers(self.states)

    @property
    def latest(self) -> int | None:
        """The newest version without a tombstone (None when every version is deleted)."""
        live = self.live
        return live[-1] if live else None

    @property
    def next_number(self) -> int:
        """Version numbers are never reused: the next one is the highest ever claimed + 1."""
        return self.numbers[-1] + 1 if self.numbers else 0

    @property
    def aliases(self) -> dict[str, int]:
        """The aliases that resolve: never to a deleted version."""
        return live_aliases(self.all_aliases, self.states)

    def number(self, ref: str | None) -> int:
        """The version `ref` (None, `latest`, `vN`, an alias) names, deleted or not; `latest` and aliases only
        ever name live ones. The artifact must have versions (the caller says where it looked)."""
        if ref in (None, "latest"):
            if self.latest is None:
                raise self.gone()
            return self.latest
        n = parse_version(ref)
        if n is None:
            n = self.all_aliases.get(ref)
            if n is None:
                raise NotFound(f"artifact {self.name!r} has no alias {ref!r}")
        if n not in self.states:
            raise NotFound(f"{self.name}:v{n} does not exist")
        return n

    def deleted(self, number: int) -> VersionDeleted:
        """The error for a deleted version: when, until when it can be restored, and how."""
        state = self.states[number]
        assert state.deleted_at is not None and state.restorable_until is not None
        ref = f"{self.name}:v{number}"
        if state.restorable_until <= self.now:
            return VersionDeleted(f"{ref} was deleted at {format_time(state.deleted_at)}; its retention window "
                                  f"ended at {format_time(state.restorable_until)}, it can no longer be restored")
        return VersionDeleted(f"{ref} was deleted at {format_time(state.deleted_at)}, restorable until "
                              f"{format_time(state.restorable_until)}; `artfs restore {ref}`")

    def gone(self) -> VersionDeleted:
        """The error for an artifact whose every version is deleted (`latest` names nothing)."""
        last = max(self.states, key=lambda n: self.states[n].deleted_at or 0.0)
        state = self.states[last]
        assert state.deleted_at is not None and state.restorable_until is not None
        return VersionDeleted(f"every version of {self.name} is deleted (the last, {self.name}:v{last}, at "
                              f"{format_time(state.deleted_at)}, restorable until "
                              f"{format_time(state.restorable_until)}); `artfs ls {self.name} --deleted`, "
                              f"`artfs restore {self.name}:vN`")


class Repo:
    """One store seen through the local index and chunk cache, in `places` (core/places.py). Synchronous:
    may block on the store."""

    def __init__(self, store: Store, places: Places, cache_size: int | None = None) -> None:
        self.store = store
        self.places = places
        self.cache_dir = places.cache
        os.makedirs(self.cache_dir, mode=0o700, exist_ok=True)
        self.index = StoreIndex(places.store_index(store.uri), store.uri)
        self.damage = StoreDamage(store, self.index)
        self.guard = PackGuard(store, self.index)  # what garbage collection may be deleting (gc_guard.py)
        self._manifest_dir = places.manifests(store.uri)
        os.makedirs(self._manifest_dir, exist_ok=True)
        self._cache_size = cache_size
        self._cache: ChunkCache | None = None
        self._format: tuple[float, FormatRecord | None] | None = None  # (read at, monotonic), record

    @property
    def cache(self) -> ChunkCache:
        if self._cache is None:
            self._cache = ChunkCache(self.cache_dir, self._cache_size)
        return self._cache

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
        self.index.close()
        self.store.close()

    # --- reading ---------------------------------------------------------------------------------

    def artifacts(self) -> list[str]:
        """Every artifact with a version record, deleted ones included (`view` says which are live)."""
        names = set()
        for key in self.store.list(ARTIFACTS):
            parsed = parse_record_key(key)
            if parsed is not None and parsed.kind == VERSIONS:
                names.add(parsed.artifact)
        return sorted(names)

    def version_numbers(self, name: str) -> list[int]:
        prefix = versions_prefix(name)
        return record_numbers(self.store.list(prefix), prefix)

    def version(self, name: str, number: int) -> VersionRecord:
        key = version_key(name, number)
        data = self.index.record(key)
        if data is None:
            try:
                data = self.store.get(key)
            except StoreNotFound:
                raise NotFound(f"{name}:v{number} does not exist") from None
            rec = decode_version(data, key, name, number)
            self.index.put_record(key, data)
            return rec
        return decode_version(data, key, name, number)

    def versions(self, name: str) -> list[VersionRecord]:
        return [self.version(name, n) for n in self.version_numbers(name)]

    def readable_versions(self, name: str, numbers: list[int] | None = None
                          ) -> tuple[list[VersionRecord], list[str]]:
        """The versions (of `numbers`, default all) whose records can be read, and a line for each that
        cannot (a damaged or foreign record must not hide the others from a listing)."""
        records, problems = [], []
        for n in self.version_numbers(name) if numbers is None else numbers:
            try:
                records.append(self.version(name, n))
            except (IntegrityError, NotFound) as e:
                problems.append(f"{name}:v{n} is unreadable: {e}")
        return records, problems

    def require_artifact(self, name: str, now: float | None = None) -> list[int]:
        """The live version numbers of `name`, ascending; NotFound if it has none (deleted: saying so)."""
        check_name(name)
        view = self.view(name, now)
        if not view.numbers:
            raise NotFound(f"artifact {name!r} does not exist in {self.store.uri}")
        if view.latest is None:
            raise view.gone()
        return view.live

    def _listing(self, name: str) -> tuple[list[int], list[int], list[int]]:
        """One LIST of the artifact's records: version numbers, alias and lifecycle sequence numbers."""
        found: dict[str, list[int]] = {VERSIONS: [], ALIASES: [], DELETED: []}
        for key in self.store.list(artifact_prefix(name)):
            parsed = parse_record_key(key)
            if parsed is not None and parsed.artifact == name:
                found[parsed.kind].append(parsed.number)
        return sorted(found[VERSIONS]), sorted(found[ALIASES]), sorted(found[DELETED])

    def view(self, name: str, now: float | None = None) -> ArtifactView:
        """The artifact's versions, their states at `now` (default: the clock) and its aliases."""
        now = time.time() if now is None else now
        numbers, alias_seqs, deleted_seqs = self._listing(name)
        return self._view(name, numbers, alias_seqs, deleted_seqs, now)

    def _view(self, name: str, numbers: list[int], alias_seqs: list[int], deleted_seqs: list[int],
              now: float) -> ArtifactView:
        alias_events = self.alias_log(name, alias_seqs) if alias_seqs else []
        events = self.lifecycle_log(name, deleted_seqs) if deleted_seqs else []
        window = self.retention_window() if events else store_format.DEFAULT_RETENTION
        states = replay(numbers, events, alias_events, window, now)
        return ArtifactView(name, numbers, states, alias_events, self.replay_aliases(alias_events), now,
                            tuple(alias_seqs), tuple(deleted_seqs))

    def refresh(self, view: ArtifactView, now: float | None = None) -> ArtifactView:
        """`view`, as it is now, without listing the artifact again when nothing was added to it since.

        Every record sequence of an artifact (versions, alias moves, lifecycle events) only grows, and each
        writer claims the highest number it listed + 1 with create-if-absent, so the first record anyone
        adds after `view` was listed takes the number right after the last one `view` saw. If none of those
        three keys exists, `view`'s records are still all there is (only the clock moved: the states are
        replayed again at `now`, a TTL may have run out); otherwise one new LIST. At most three small reads
        instead of a LIST of every version."""
        now = time.time() if now is None else now
        name = view.name
        probes = (version_key(name, view.next_number),
                  alias_key(name, view.alias_seqs[-1] + 1 if view.alias_seqs else 0),
                  deleted_key(name, view.deleted_seqs[-1] + 1 if view.deleted_seqs else 0))
        if any(self.store.exists(key) for key in probes):
            return self.view(name, now)
        return self._view(name, view.numbers, list(view.alias_seqs), list(view.deleted_seqs), now)

    def views(self, now: float | None = None) -> dict[str, ArtifactView]:
        """Every artifact (deleted ones too) from one LIST of `artifacts/` (garbage collection, `ls`)."""
        now = time.time() if now is None else now
        found: dict[str, dict[str, list[int]]] = {}
        for key in self.store.list(ARTIFACTS):
            parsed = parse_record_key(key)
            if parsed is not None:
                found.setdefault(parsed.artifact, {VERSIONS: [], ALIASES: [], DELETED: []})[parsed.kind].append(
                    parsed.number)
        out = {}
        for name, kinds in sorted(found.items()):
            if kinds[VERSIONS]:
                out[name] = self._view(name, sorted(kinds[VERSIONS]), sorted(kinds[ALIASES]),
                                       sorted(kinds[DELETED]), now)
        return out

    def heads(self, name: str) -> tuple[int | None, int]:
        """(latest: the newest live version or None, the number the next version gets)."""
        view = self.view(name)
        return view.latest, view.next_number

    def lifecycle_log(self, name: str, seqs: list[int] | None = None) -> list[LifecycleEvent]:
        """Deletes, restores and TTL changes of `name`, in order (records are immutable: cached locally)."""
        prefix = deleted_prefix(name)
        if seqs is None:
            seqs = record_numbers(self.store.list(prefix), prefix)
        events = []
        for seq in seqs:
            key = deleted_key(name, seq)
            data = self.index.record(key)
            if data is None:
                data = self.store.get(key)
                ev = decode_lifecycle(data, key, seq)
                self.index.put_record(key, data)
            else:
                ev = decode_lifecycle(data, key, seq)
            events.append(ev)
        return events

    def append_lifecycle_event(self, name: str, kind: str, versions: list[int], ttl: float | None = None,
                               expires: float | None = None, whole: bool = False,
                               now: float | None = None) -> LifecycleEvent:
        """Claim the next lifecycle record of `name` (create-if-absent, as alias moves are claimed)."""
        self.check_write(store_format.TOMBSTONES)
        prefix = deleted_prefix(name)
        while True:
            seqs = record_numbers(self.store.list(prefix), prefix)
            seq = seqs[-1] + 1 if seqs else 0
            ev = LifecycleEvent(seq=seq, kind=kind, versions=sorted(versions),
                                time=time.time() if now is None else now, creator=creator(), ttl=ttl,
                                expires=expires, whole=whole)
            data = encode(ev)
            if self.store.create_if_absent(deleted_key(name, seq), data):
                try:
                    self.index.put_record(deleted_key(name, seq), data)
                except ArtfsError as e:  # written: the index is a disposable copy
                    log.warning("%s", e)
                return ev

    # --- the store's format and settings (core/store_format.py) ----------------------------------

    def store_format(self, max_age: float = 60.0) -> FormatRecord | None:
        """`format.json` (None for a format-1 store), re-read when older than `max_age` seconds."""
        now = time.monotonic()
        if self._format is None or now - self._format[0] > max_age:
            self._format = (now, store_format.read(self.store))
        return self._format[1]

    def check_write(self, *features: str) -> None:
        """Every write path calls this first: refuse a store whose format this client does not know, and
        record the features about to be used (store_format.py says why). A record read in the last minute
        that already lists `features` is trusted (a publish does not pay a GET for it)."""
        cached = self._format
        fresh = cached is not None and time.monotonic() - cached[0] < 60.0
        if cached is not None and fresh and (
                not features or (cached[1] is not None and set(features) <= set(cached[1].features))):
            store_format.check_writable(self.store.uri, cached[1])
            return
        rec = store_format.require(self.store, set(features))
        self._format = (time.monotonic(), rec)

    def retention_window(self) -> float:
        """Seconds a soft-deleted version stays restorable in this store."""
        return store_format.retention(self.store_format())

    def alias_log(self, name: str, seqs: list[int] | None = None) -> list[AliasEvent]:
        prefix = aliases_prefix(name)
        events = []
        if seqs is None:
            seqs = record_numbers(self.store.list(prefix), prefix)
        for seq in seqs:
            key = alias_key(name, seq)
            data = self.index.record(key)
            if data is None:
                data = self.store.get(key)
                ev = decode_alias(data, key, seq)
                self.index.put_record(key, data)
            else:
                ev = decode_alias(data, key, seq)
            events.append(ev)
        return events

    @staticmethod
    def replay_aliases(events: list[AliasEvent]) -> dict[str, int]:
        current: dict[str, int] = {}
        for ev in events:
            if ev.version is None:
                current.pop(ev.alias, None)
            else:
                current[ev.alias] = ev.version
        return current

    def aliases(self, name: str) -> dict[str, int]:
        """Current custom aliases → version number (not including `latest`); never to a deleted version."""
        return self.view(name).aliases

    def resolve(self, ref: Ref | str, now: float | None = None) -> VersionRecord:
        """`name`, `name:vN`, `name:latest`, `name:alias` → the version record. A deleted version (or an
        alias of one) raises VersionDeleted, saying until when `artfs restore` can bring it back."""
        if isinstance(ref, str):
            from artfs.core.names import parse_ref

            ref = parse_ref(ref)
        check_name(ref.name)
        view = self.view(ref.name, now)
        if not view.numbers:
            raise NotFound(f"artifact {ref.name!r} does not exist in {self.store.uri}")
        n = view.number(ref.ref)
        if not is_live(view.states[n]):
            raise view.deleted(n)
        return self.version(ref.name, n)

    # --- manifests -------------------------------------------------------------------------------

    def manifest_file(self, mid: str) -> str:
        """A local, verified copy of a manifest (downloaded once; manifests are immutable)."""
        path = os.path.join(self._manifest_dir, mid)
        if os.path.exists(path):
            return path
        try:
            data = self.store.get(manifest_key(mid))
        except StoreNotFound:
            raise IntegrityError(f"manifest {mid} is missing from the store") from None
        if xxhash.xxh3_128_hexdigest(data) != mid:
            raise IntegrityError(f"manifest {mid} is corrupt: its content does not match its name")
        fd, tmp = tempfile.mkstemp(dir=self._manifest_dir, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return path

    def ensure_index(self, rec: VersionRecord, background: bool = False) -> Header:
        """Make `lookup`/`listdir` work for a version (download and index its manifest once).

        With `background`, return at once: the index builds in a thread while lookups are answered
        from the manifest's blocks (a mount's first byte must not wait for a million-entry index).
        """
        header = self.index.header(rec.manifest)
        if header is None:
            path = self.manifest_file(rec.manifest)
            if background:
                return self.index.start_build(rec.manifest, path)
            header = self.index.build(rec.manifest, path)
        return header

    def ensure_chunks(self, rec: VersionRecord) -> None:
        """Make the local chunk index know where a version's chunks live (for dedup on commit)."""
        self.index.build_chunks(rec.manifest, self.manifest_file(rec.manifest))

    def entries(self, rec: VersionRecord) -> tuple[Header, Iterator[Entry]]:
        """Stream a version's entries in path order, validated."""
        return read_manifest(self.manifest_file(rec.manifest), rec.manifest)

    # --- writing ---------------------------------------------------------------------------------

    def upload_manifest(self, path: str) -> str:
        with open(path, "rb") as f:
            h = xxhash.xxh3_128()
            while block := f.read(1 << 20):
                h.update(block)
        mid = h.hexdigest()
        self.store.put_file(manifest_key(mid), path)
        dest = os.path.join(self._manifest_dir, mid)
        if not os.path.exists(dest):
            os.replace(path, dest)
        return mid

    def artifact_type(self, name: str, numbers: list[int] | None = None) -> str | None:
        """The type of the newest version (of those in `numbers`; default: the live ones)."""
        numbers = self.view(name).live if numbers is None else numbers
        return self.version(name, numbers[-1]).type if numbers else None

    def check_type(self, name: str, type_: str | None, view: ArtifactView | None = None) -> str:
        """The type a new version of `name` gets; an explicit type must match the artifact's (as `view`, if
        given, saw it: a commit lists its artifact once and passes that view around)."""
        if type_ is not None:
            check_name(type_, "type")
        existing = self.artifact_type(name, view.live if view is not None else None)
        if existing is not None and type_ is not None and type_ != existing:
            raise ArtfsError(f"artifact {name!r} is a {existing}, not a {type_}")
        return existing or type_ or "dataset"

    def publish(
        self,
        name: str,
        type_: str,
        manifest_path: str,
        header: Header,
        message: str = "",
        metadata: dict[str, str] | None = None,
        aliases: list[str] | tuple[str, ...] = (),
        parent: int | None = None,
        number: int | None = None,
        repaired: bool = False,
        run: str | None = None,
        ttl: float | None = None,
        view: ArtifactView | None = None,
    ) -> VersionRecord | None:
        """Claim the next version for an uploaded tree. None when the tree equals `latest`'s — unless it
        is `repaired`: the same content, uploaded afresh because copies it would have reused are bad.

        Packs must already be in the store: this uploads the manifest, then claims a number.
        With `number`, claim exactly that one or raise VersionTaken (a merge made against `number-1`
        must be redone if someone else published meanwhile). Numbers are never reused: the next one is the
        highest ever claimed + 1, deleted or not; "equals latest" compares with the newest live version.
        With `ttl` (seconds), the new version is soft-deleted that long after its creation (a lifecycle
        record written right after the claim).

        `view`: the artifact as the caller listed it earlier (Committer: once, when the commit started), so
        that a commit lists its artifact's records once, not once per question. It may be stale, and is safe:
        a claim of its next number succeeds only if nobody claimed that number since — and then nobody
        published at all since, as numbers are claimed in order — else the claim fails, and the artifact
        is listed afresh. Before answering "equals latest" (which publishes nothing) it is `refresh`ed,
        so that a newer latest someone published, or a delete, is not missed. After a lost claim the type
        is checked again: the winner may have been the artifact's first version, of another type.
        """
        check_name(name)
        for a in aliases:
            check_alias(a)
        self.check_write(*((store_format.TOMBSTONES,) if ttl is not None else ()))
        mid = self.upload_manifest(manifest_path)
        who = creator()
        number_fixed = number is not None
        fresh = view is None  # listed just now (not handed in by the caller)
        lost = False  # a claim was lost: someone else published meanwhile
        while True:
            if view is None:
                view, fresh = self.view(name), True
            latest = view.latest
            if lost and latest is not None and (winner := self.version(name, latest)).type != type_:
                raise ArtfsError(f"artifact {name!r} is a {winner.type}, not a {type_} ({winner.ref} was "
                                 f"published meanwhile by {winner.creator})")
            if latest is not None and not repaired and self.version(name, latest).digest == header.digest:
                if not fresh:
                    view, fresh = self.refresh(view), True
                    continue
                for alias in aliases:  # as W&B does: the aliases apply to the identical latest
                    self.set_alias(name, alias, latest, view)
                return None
            next_number = view.next_number
            if number_fixed and number != next_number:
                raise VersionTaken(f"{name}:v{number} was published by someone else meanwhile")
            number = next_number
            mid, header = self._guard_packs(mid, header)  # right before the claim: see core/gc_guard.py
            rec = VersionRecord(
                artifact=name, version=number, type=type_, digest=header.digest, manifest=mid,
                files=header.files, bytes=header.bytes, created=time.time(), creator=who,
                message=message, metadata=dict(metadata or {}), parent=parent, run=run,
            )
            data = encode(rec)
            if self.store.create_if_absent(version_key(name, number), data):
                try:
                    self.index.put_record(version_key(name, number), data)
                except ArtfsError as e:  # published: the index is a disposable copy of the record
                    log.warning("%s", e)
                break
            if number_fixed:
                raise VersionTaken(f"{name}:v{number} was published by someone else meanwhile")
            view, lost = None, True
        if ttl is not None:
            self.append_lifecycle_event(name, TTL, [number], ttl=ttl, expires=rec.created + ttl)
        try:
            self.index.build(mid, os.path.join(self._manifest_dir, mid))
        except ArtfsError as e:  # published; the index is rebuilt on the next read of this version
            log.warning("%s", e)
        if run is not None:  # the record names the run; this lists it among the run's outputs (core/runs.py)
            try:
                record_output(self, run, rec)
            except ArtfsError as e:  # published: the version record still says which run made it
                log.warning("version %s is published, but recording it as an output of run %s failed: %s",
                            rec.ref, run, e)
        for alias in aliases:
            if ttl is None:  # just claimed, so it exists and is live: no need to list the artifact again
                self._append_alias_event(name, alias, number)
            else:  # a TTL that short may have run out already: set_alias says so
                self.set_alias(name, alias, number)
        return rec

    def _guard_packs(self, mid: str, header: Header) -> tuple[str, Header]:
        """The manifest to claim a version with: `mid` if every pack it names is present and not condemned
        by garbage collection, else a copy whose content in bad packs was uploaded afresh (gc_guard.py)."""
        while bad := self.guard.check(pack_ids(header.packs)):  # references' sources are no packs
            log.warning("%d packs of this commit are being garbage-collected: uploading their content again",
                        len(bad))
            reader = ChunkReader(self.store, self.cache, self.damage)
            path, header = replace_packs(self.store, reader, self.guard, self.manifest_file(mid), bad,
                                         self.cache_dir, self.index)
            try:
                mid = self.upload_manifest(path)
            finally:
                if os.path.exists(path):
                    os.unlink(path)
        return mid, header

    def _append_alias_event(self, name: str, alias: str, version: int | None) -> AliasEvent:
        self.check_write()
        prefix = aliases_prefix(name)
        while True:
            seqs = record_numbers(self.store.list(prefix), prefix)
            seq = seqs[-1] + 1 if seqs else 0
            ev = AliasEvent(seq=seq, alias=alias, version=version, time=time.time(), creator=creator())
            if self.store.create_if_absent(alias_key(name, seq), encode(ev)):
                return ev

    def set_alias(self, name: str, alias: str, version: int, view: ArtifactView | None = None) -> AliasEvent:
        """Point `alias` at `version`, which must exist and be live (in `view`, if given: one listed just now)."""
        check_alias(alias)
        check_name(name)
        view = self.view(name) if view is None else view
        if version not in view.states:
            raise NotFound(f"{name}:v{version} does not exist")
        if not is_live(view.states[version]):  # aliases never point at deleted versions
            raise view.deleted(version)
        return self._append_alias_event(name, alias, version)

    def delete_alias(self, name: str, alias: str) -> AliasEvent:
        check_alias(alias, new=False)
        check_name(name)
        view = self.view(name)
        if not view.numbers:
            raise NotFound(f"artifact {name!r} does not exist in {self.store.uri}")
        if alias not in view.all_aliases:  # one pointing at a deleted version can still be deleted
            raise NotFound(f"artifact {name!r} has no alias {alias!r}")
        return self._append_alias_event(name, alias, None)
