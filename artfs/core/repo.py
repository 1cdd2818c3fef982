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

import xxhash

from artfs.core.damage import StoreDamage
from artfs.core.index import StoreIndex
from artfs.core.manifest import Entry, Header
from artfs.core.manifest_file import read_manifest
from artfs.core.names import Ref, check_alias, check_name, parse_version
from artfs.core.places import Places
from artfs.core.records import (
    AliasEvent,
    VersionRecord,
    creator,
    decode_alias,
    decode_version,
    encode,
)
from artfs.core.store_keys import (
    ARTIFACTS,
    VERSIONS,
    alias_key,
    aliases_prefix,
    manifest_key,
    parse_record_key,
    record_numbers,
    version_key,
    versions_prefix,
)
from artfs.errors import ArtfsError, Conflict, IntegrityError, NotFound, StoreNotFound
from artfs.storage.cache import ChunkCache
from artfs.storage.store import Store

log = logging.getLogger(__name__)


class VersionTaken(Conflict):
    """The exact version number asked for was claimed by another writer first."""


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
        self._manifest_dir = places.manifests(store.uri)
        os.makedirs(self._manifest_dir, exist_ok=True)
        self._cache_size = cache_size
        self._cache: ChunkCache | None = None

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

    def readable_versions(self, name: str) -> tuple[list[VersionRecord], list[str]]:
        """The versions whose records can be read, and a line for each that cannot (a damaged or foreign
        record must not hide the others from a listing)."""
        records, problems = [], []
        for n in self.version_numbers(name):
            try:
                records.append(self.version(name, n))
            except (IntegrityError, NotFound) as e:
                problems.append(f"{name}:v{n} is unreadable: {e}")
        return records, problems

    def require_artifact(self, name: str) -> list[int]:
        check_name(name)
        numbers = self.version_numbers(name)
        if not numbers:
            raise NotFound(f"artifact {name!r} does not exist in {self.store.uri}")
        return numbers

    def alias_log(self, name: str) -> list[AliasEvent]:
        prefix = aliases_prefix(name)
        events = []
        for seq in record_numbers(self.store.list(prefix), prefix):
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
        """Current custom aliases → version number (not including `latest`)."""
        return self.replay_aliases(self.alias_log(name))

    def resolve(self, ref: Ref | str) -> VersionRecord:
        """`name`, `name:vN`, `name:latest`, `name:alias` → the version record."""
        if isinstance(ref, str):
            from artfs.core.names import parse_ref

            ref = parse_ref(ref)
        numbers = self.require_artifact(ref.name)
        if ref.ref in (None, "latest"):
            return self.version(ref.name, numbers[-1])
        n = parse_version(ref.ref)
        if n is None:
            n = self.aliases(ref.name).get(ref.ref)
            if n is None:
                raise NotFound(f"artifact {ref.name!r} has no alias {ref.ref!r}")
        if n not in numbers:
            raise NotFound(f"{ref.name}:v{n} does not exist")
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
        numbers = self.version_numbers(name) if numbers is None else numbers
        return self.version(name, numbers[-1]).type if numbers else None

    def check_type(self, name: str, type_: str | None) -> str:
        """The type a new version of `name` gets; an explicit type must match the artifact's."""
        if type_ is not None:
            check_name(type_, "type")
        existing = self.artifact_type(name)
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
    ) -> VersionRecord | None:
        """Claim the next version for an uploaded tree. None when the tree equals `latest`'s — unless it
        is `repaired`: the same content, uploaded afresh because copies it would have reused are bad.

        Packs must already be in the store: this uploads the manifest, then claims a number.
        With `number`, claim exactly that one or raise VersionTaken (a merge made against `number-1`
        must be redone if someone else published meanwhile).
        """
        check_name(name)
        for a in aliases:
            check_alias(a)
        mid = self.upload_manifest(manifest_path)
        who = creator()
        number_fixed = number is not None
        while True:
            numbers = self.version_numbers(name)
            if numbers and not repaired and self.version(name, numbers[-1]).digest == header.digest:
                for alias in aliases:  # as W&B does: the aliases apply to the identical latest
                    self.set_alias(name, alias, numbers[-1])
                return None
            next_number = numbers[-1] + 1 if numbers else 0
            if number_fixed and number != next_number:
                raise VersionTaken(f"{name}:v{number} was published by someone else meanwhile")
            number = next_number
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
        try:
            self.index.build(mid, os.path.join(self._manifest_dir, mid))
        except ArtfsError as e:  # published; the index is rebuilt on the next read of this version
            log.warning("%s", e)
        for alias in aliases:
            self.set_alias(name, alias, number)
        return rec

    def _append_alias_event(self, name: str, alias: str, version: int | None) -> AliasEvent:
        prefix = aliases_prefix(name)
        while True:
            seqs = record_numbers(self.store.list(prefix), prefix)
            seq = seqs[-1] + 1 if seqs else 0
            ev = AliasEvent(seq=seq, alias=alias, version=version, time=time.time(), creator=creator())
            if self.store.create_if_absent(alias_key(name, seq), encode(ev)):
                return ev

    def set_alias(self, name: str, alias: str, version: int) -> AliasEvent:
        check_alias(alias)
        numbers = self.require_artifact(name)
        if version not in numbers:
            raise NotFound(f"{name}:v{version} does not exist")
        return self._append_alias_event(name, alias, version)

    def delete_alias(self, name: str, alias: str) -> AliasEvent:
        check_alias(alias, new=False)
        self.require_artifact(name)
        if alias not in self.aliases(name):
            raise NotFound(f"artifact {name!r} has no alias {alias!r}")
        return self._append_alias_event(name, alias, None)
