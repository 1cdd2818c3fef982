"""Plain records kept in the store — version records, alias and lifecycle events, the store's format — and
their one JSON form.

Records are validated on the way in, because a bucket may be written by someone else.
"""

from __future__ import annotations

import getpass
import re
import socket

import msgspec

from artfs.core.names import check_alias, check_name
from artfs.core.packs import ref_problem
from artfs.errors import IntegrityError, InvalidName

_HEX32 = re.compile(r"^[0-9a-f]{32}$")


class VersionRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    """An immutable version: claimed once under `artifacts/<name>/versions/<n>.json`, never rewritten."""

    artifact: str
    version: int
    type: str
    digest: str
    manifest: str
    files: int
    bytes: int
    created: float
    creator: str
    message: str = ""
    metadata: dict[str, str] = {}
    parent: int | None = None  # the version a staging tree started from (lineage)
    run: str | None = None  # the run that produced this version (core/runs.py), if it was made inside one
    format: int = 1

    @property
    def ref(self) -> str:
        return f"{self.artifact}:v{self.version}"


class AliasEvent(msgspec.Struct, frozen=True, omit_defaults=True):
    """One alias move (or deletion, version None), appended to `artifacts/<name>/aliases/<seq>.json`."""

    seq: int
    alias: str
    version: int | None
    time: float
    creator: str


DELETE, RESTORE, TTL = "delete", "restore", "ttl"


class LifecycleEvent(msgspec.Struct, frozen=True, omit_defaults=True):
    """One change to versions' lives, appended to `artifacts/<name>/deleted/<seq>.json` and never rewritten
    (core/tombstones.py replays the log). `delete` tombstones `versions` (all of them for `artfs rm NAME`,
    `whole`); `restore` lifts a tombstone and drops the TTL; `ttl` sets (`ttl` seconds, soft-deleting at
    `expires` = created + ttl) or removes (None) a version's time to live."""

    seq: int
    kind: str
    versions: list[int]
    time: float
    creator: str
    ttl: float | None = None
    expires: float | None = None
    whole: bool = False


class FormatRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    """`format.json`: the store's format version and the features in use (core/store_format.py), and its
    settings (the retention window of soft-deleted versions, seconds)."""

    format: int
    features: list[str] = []
    retention: float | None = None
    time: float = 0.0
    creator: str = ""


class QuarantineRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    """A chunk location (digest in pack, at offset) whose bytes failed verification when someone read them.
    Written once under `quarantine/<digest>/<pack>`; commits consult the set and upload that content afresh
    instead of deduplicating against the bad copy."""

    digest: str
    pack: str
    offset: int
    reason: str
    time: float
    creator: str


class RelocationRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    """Chunk `digest`'s copy in `from_pack` is bad; a verified copy lives at (pack, offset, …). Written once
    under `relocations/<digest>/<from_pack>` by `artfs verify --repair`."""

    digest: str
    from_pack: str
    pack: str
    offset: int
    stored_len: int
    raw_len: int
    flags: int
    time: float
    creator: str


def decode_relocation(data: bytes, digest: bytes) -> RelocationRecord:
    """A relocation record, checked: it must be about `digest` and name a location artfs could have written."""
    try:
        rec = msgspec.json.decode(data, type=RelocationRecord)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise IntegrityError(f"relocation record of chunk {digest.hex()} is malformed: {e}") from None
    problem = ref_problem(rec.offset, rec.stored_len, rec.raw_len, rec.flags)
    if rec.digest != digest.hex() or not _HEX32.match(rec.pack) or problem:
        raise IntegrityError(f"relocation record of chunk {digest.hex()} is invalid: {problem or 'wrong names'}")
    return rec


def creator() -> str:
    """`user@host` of whoever runs this process."""
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def encode(record: msgspec.Struct) -> bytes:
    return msgspec.json.encode(record)


def decode_version(data: bytes, key: str, name: str, number: int) -> VersionRecord:
    try:
        rec = msgspec.json.decode(data, type=VersionRecord)
        check_name(rec.artifact)
        check_name(rec.type, "type")
    except (msgspec.ValidationError, msgspec.DecodeError, InvalidName) as e:
        raise IntegrityError(f"version record {key} rejected: {e}") from None
    if rec.artifact != name or rec.version != number or not _HEX32.match(rec.manifest):
        raise IntegrityError(f"version record {key} rejected: it does not describe {name}:v{number}")
    return rec


def decode_lifecycle(data: bytes, key: str, seq: int) -> LifecycleEvent:
    try:
        ev = msgspec.json.decode(data, type=LifecycleEvent)
    except (msgspec.ValidationError, msgspec.DecodeError) as e:
        raise IntegrityError(f"lifecycle record {key} rejected: {e}") from None
    if ev.seq != seq or ev.kind not in (DELETE, RESTORE, TTL) or any(n < 0 for n in ev.versions):
        raise IntegrityError(f"lifecycle record {key} rejected: wrong sequence number, kind or version")
    return ev


def decode_format(data: bytes, key: str) -> FormatRecord:
    try:
        rec = msgspec.json.decode(data, type=FormatRecord)
    except (msgspec.ValidationError, msgspec.DecodeError) as e:
        raise IntegrityError(f"store format record {key} rejected: {e}") from None
    if rec.retention is not None and rec.retention < 0:
        raise IntegrityError(f"store format record {key} rejected: negative retention window")
    return rec


def decode_alias(data: bytes, key: str, seq: int) -> AliasEvent:
    try:
        ev = msgspec.json.decode(data, type=AliasEvent)
        check_alias(ev.alias, new=False)
    except (msgspec.ValidationError, msgspec.DecodeError, InvalidName) as e:
        raise IntegrityError(f"alias record {key} rejected: {e}") from None
    if ev.seq != seq:
        raise IntegrityError(f"alias record {key} rejected: sequence number mismatch")
    return ev


class GcConfig(msgspec.Struct, frozen=True, omit_defaults=True):
    """`gc/config.json`: the safety margin (seconds) gc waits and every writer's pre-claim check assumes.
    `previous` is the margin before the last change, still in force until `changed` + previous (a writer
    may have read it just before the change: core/gc_guard.py)."""

    margin: float
    previous: float | None = None
    changed: float = 0.0


class GcLease(msgspec.Struct, frozen=True, omit_defaults=True):
    """`gc/lease`: a collector runs until `expires` (an optimisation: safety never depends on it)."""

    holder: str
    expires: float
    started: float = 0.0


class StagingLease(msgspec.Struct, frozen=True, omit_defaults=True):
    """`gc/staging/<area id>`: a staging area somewhere reads its base version's chunks until `expires`
    (refreshed while the area exists; removed when it is discarded, sealed or reset to another base)."""

    artifact: str
    base: int | None
    expires: float
    holder: str = ""
