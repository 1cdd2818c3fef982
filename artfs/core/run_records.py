"""What a run is, as data: its records (msgspec structs, encoded with records.encode, under the keys of
store_keys.py), the RunInfo the queries return, and run ids. No store here: runs.py writes and reads them.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec

from artfs.errors import IntegrityError, InvalidName

DEFAULT_HEARTBEAT = 10.0  # seconds between heartbeats of `artfs run`

# `20261201-025424.123-3fa9c1b2`: UTC time to the millisecond, then random; sorts by time as text.
_RUN_ID = re.compile(r"^[0-9]{8}-[0-9]{6}\.[0-9]{3}-[0-9a-z]{4,32}$")
_SOURCE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:@+-]{0,127}$")


class RunRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    """A run's start, immutable: written once under `runs/<inverted id>.json`."""

    id: str
    name: str
    job_type: str
    config: dict[str, Any]
    command: list[str]
    cwd: str
    git_commit: str | None
    creator: str
    host: str
    pid: int
    started: float
    heartbeat: float = DEFAULT_HEARTBEAT  # the interval its writer promised; 0: it sends none (no crash check)


class RunInput(msgspec.Struct, frozen=True, omit_defaults=True):
    """What `source` saw a run read of one version, cumulative (files opened, their bytes) up to `time`."""

    artifact: str
    version: int
    digest: str
    how: str  # "observed" | "declared" (merged: "declared+observed" when sources disagree)
    files: int
    bytes: int
    source: str
    time: float

    @property
    def ref(self) -> str:
        return f"{self.artifact}:v{self.version}"


class RunEnd(msgspec.Struct, frozen=True, omit_defaults=True):
    status: str  # "finished" | "failed"
    time: float
    exit_code: int | None = None


class RunOutput(msgspec.Struct, frozen=True, omit_defaults=True):
    artifact: str
    version: int
    digest: str
    time: float


@dataclass
class RunInfo:
    """A run as queries return it: its start record and what the store says happened since."""

    record: RunRecord
    status: str
    ended: float | None = None
    exit_code: int | None = None
    last_heartbeat: float | None = None
    inputs: list[RunInput] = field(default_factory=list)
    outputs: list[tuple[str, int]] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.record.id

    def as_json(self) -> dict[str, Any]:
        """Everything, as plain JSON (`artfs runs show --json`)."""
        rec = self.record
        return {
            "id": rec.id, "name": rec.name, "job_type": rec.job_type, "status": self.status,
            "exit_code": self.exit_code, "started": rec.started, "ended": self.ended, "duration": self.duration,
            "last_heartbeat": self.last_heartbeat, "heartbeat_interval": rec.heartbeat, "config": rec.config,
            "command": rec.command, "cwd": rec.cwd, "git_commit": rec.git_commit, "creator": rec.creator,
            "host": rec.host, "pid": rec.pid,
            "inputs": [{"ref": i.ref, **msgspec.to_builtins(i)} for i in self.inputs],
            "outputs": [{"ref": f"{a}:v{v}", "artifact": a, "version": v} for a, v in self.outputs],
        }

    @property
    def duration(self) -> float | None:
        """Seconds from start to end, or to the last sign of life of a crashed run; None while running."""
        if self.ended is not None:
            return self.ended - self.record.started
        if self.status == "crashed":
            return (self.last_heartbeat or self.record.started) - self.record.started
        return None


# --- ids and checks --------------------------------------------------------------------------------


def new_run_id(now: float | None = None) -> str:
    """Sortable by time (UTC, ms) as text; unique across machines by 32 random bits."""
    now = time.time() if now is None else now
    ms = int(now * 1000)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(ms // 1000))
    return f"{stamp}.{ms % 1000:03d}-{secrets.token_hex(4)}"


def check_run_id(run_id: str) -> str:
    """A run id as new_run_id makes them; anything else is an InvalidName (it becomes part of keys)."""
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
        raise InvalidName(f"invalid run id {run_id!r}: expected one like 20261201-025424.123-3fa9c1b2")
    return run_id


def is_run_id(text: str) -> bool:
    """Whether `text` is a run id as new_run_id makes them (keys that parse but hold anything else are skipped)."""
    return _RUN_ID.match(text) is not None


def check_source(source: str) -> str:
    """An input source's name (a mount daemon's, "api"); anything else is an InvalidName (it becomes part of keys)."""
    if not isinstance(source, str) or not _SOURCE.match(source):
        raise InvalidName(f"invalid input source {source!r}: use letters, digits and . _ : @ + -")
    return source


def decode_run_record(data: bytes, key: str, type_: type[Any]) -> Any:
    """A stored run record as `type_`; one that does not decode is an IntegrityError naming its key."""
    try:
        return msgspec.json.decode(data, type=type_)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise IntegrityError(f"run record {key} rejected: {e}") from None
