"""Plain records kept in the store — version records and alias events — and their one JSON form.

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


def decode_alias(data: bytes, key: str, seq: int) -> AliasEvent:
    try:
        ev = msgspec.json.decode(data, type=AliasEvent)
        check_alias(ev.alias, new=False)
    except (msgspec.ValidationError, msgspec.DecodeError, InvalidName) as e:
        raise IntegrityError(f"alias record {key} rejected: {e}") from None
    if ev.seq != seq:
        raise IntegrityError(f"alias record {key} rejected: sequence number mismatch")
    return ev
