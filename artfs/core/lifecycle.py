"""Deleting, restoring and expiring versions, retention, and what garbage collection must keep.

A delete is soft: a tombstone appended to the artifact's lifecycle log (`artifacts/<name>/deleted/<seq>`,
claimed with create-if-absent and never rewritten, like alias moves). Version records are never removed, so
numbers are never reused; `latest` is the newest version without a tombstone; aliases never resolve to a
deleted version. A deleted version stays restorable for the store's retention window (default 7 days,
`format.json`), and its chunks are kept that long (`kept_versions`, which gc reads); after it, gc may
reclaim them and `restore` refuses. TTLs (`put --ttl`, `seal --ttl`, `artfs ttl`) are lifecycle records
too; the expiry is evaluated by every reader from the record and the clock (tombstones.py), nothing
has to run for a version to expire. Every function takes `now` so that tests inject the clock.

Blocking (store calls): run from a thread on an event loop.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from artfs.core.manifest_file import read_manifest
from artfs.core.names import Ref, check_name, parse_ref, parse_version
from artfs.core.packs import FLAG_SOURCE
from artfs.core.records import DELETE, RESTORE, TTL, VersionRecord
from artfs.core.repo import ArtifactView, Repo
from artfs.core.tombstones import VersionState, format_time, is_live
from artfs.errors import ArtfsError, Conflict, NotFound

__all__ = [
    "VersionState", "is_live", "version_states", "kept_versions", "retention_window", "parse_ttl",
    "delete", "delete_artifact", "restore", "set_ttl", "deleted_versions", "retain_plan", "apply_retain",
]

_TTL = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(s|m|h|d|w)")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class InvalidTTL(ArtfsError):
    """A TTL or duration that is not like 30d, 12h, 90m, 2w (or `none`)."""


def parse_ttl(text: str | float | None) -> float | None:
    """Seconds in "30d", "12h", "90m", "3600s", "2w"; None for "none" (no TTL). A number is seconds."""
    if text is None:
        return None
    if isinstance(text, (int, float)):
        if text <= 0:
            raise InvalidTTL(f"invalid TTL {text!r}: it must be positive")
        return float(text)
    t = text.strip().lower()
    if t in ("none", "never", "off"):
        return None
    match = _TTL.fullmatch(t)
    if not match:
        raise InvalidTTL(f"invalid TTL {text!r}: use a duration like 30d, 12h, 90m, 2w, or none")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise InvalidTTL(f"invalid TTL {text!r}: it must be positive")
    return seconds


def retention_window(repo: Repo) -> float:
    """Seconds a soft-deleted version stays restorable (the store's setting, default 7 days)."""
    return repo.retention_window()


def version_states(repo: Repo, name: str, now: float | None = None) -> dict[int, VersionState]:
    """Every version number ever claimed for `name` (live or not) → its state now."""
    return repo.view(name, now).states


def kept_versions(repo: Repo, now: float | None = None) -> list[VersionRecord]:
    """Every version whose chunks garbage collection must keep: live ones, and soft-deleted ones still
    within the retention window (still restorable). Versions past the window are not in it.

    One LIST of `artifacts/`; records come from the local index after their first read."""
    now = time.time() if now is None else now
    out = []
    for name, view in repo.views(now).items():
        for n, state in view.states.items():
            if is_live(state) or (state.restorable_until is not None and now < state.restorable_until):
                out.append(repo.version(name, n))
    return out


def _ref(ref: Ref | str) -> Ref:
    return parse_ref(ref) if isinstance(ref, str) else ref


def _number(repo: Repo, view: ArtifactView, ref: Ref) -> int:
    """The version `ref` names, deleted or not (`latest` and aliases only name live ones)."""
    if not view.numbers:
        raise NotFound(f"artifact {ref.name!r} does not exist in {repo.store.uri}")
    return view.number(ref.ref)


@dataclass(frozen=True)
class DeleteResult:
    name: str
    versions: list[int]  # what this delete tombstoned
    aliases_deleted: list[str]
    restorable_until: float
    latest: int | None  # the artifact's latest afterwards
    whole: bool = False

    def as_json(self) -> dict:
        return {"artifact": self.name, "deleted": [f"{self.name}:v{n}" for n in self.versions],
                "aliases_deleted": self.aliases_deleted, "restorable_until": self.restorable_until,
                "latest": f"{self.name}:v{self.latest}" if self.latest is not None else None, "whole": self.whole}


def delete(repo: Repo, ref: Ref | str, delete_aliases: bool = False, now: float | None = None) -> DeleteResult:
    """Soft-delete one version. Refused while a user alias points at it, unless `delete_aliases` (which
    deletes those aliases first: an alias must never resolve to a deleted version)."""
    ref = _ref(ref)
    check_name(ref.name)
    if ref.ref is None:
        raise ArtfsError(f"give the version to delete ({ref.name}:vN); deleting the whole artifact is "
                         f"`artfs rm {ref.name}`")
    now = time.time() if now is None else now
    view = repo.view(ref.name, now)
    n = _number(repo, view, ref)
    state = view.states[n]
    if not is_live(state):
        raise Conflict(f"{ref.name}:v{n} is already deleted (at {format_time(state.deleted_at or now)})")
    holders = sorted(a for a, v in view.all_aliases.items() if v == n)
    if holders and not delete_aliases:
        raise Conflict(f"{ref.name}:v{n} is what alias {', '.join(holders)} points at: move the alias first, "
                       f"or give --delete-aliases to delete it too")
    for alias in holders:
        repo.delete_alias(ref.name, alias)
    repo.append_lifecycle_event(ref.name, DELETE, [n], now=now)
    after = repo.view(ref.name, now)
    return DeleteResult(ref.name, [n], holders, now + repo.retention_window(), after.latest)


def delete_artifact(repo: Repo, name: str, now: float | None = None) -> DeleteResult:
    """Soft-delete every live version of `name` (one record). Its aliases stay, hidden while their targets
    are deleted; a version restored brings back the aliases that point at it."""
    check_name(name)
    now = time.time() if now is None else now
    view = repo.view(name, now)
    if not view.numbers:
        raise NotFound(f"artifact {name!r} does not exist in {repo.store.uri}")
    live = view.live
    if not live:
        raise Conflict(f"artifact {name!r} is already deleted (`artfs ls {name} --deleted`)")
    repo.append_lifecycle_event(name, DELETE, live, whole=True, now=now)
    return DeleteResult(name, live, [], now + repo.retention_window(), None, whole=True)


def restore(repo: Repo, ref: Ref | str, now: float | None = None) -> VersionRecord:
    """Bring back a soft-deleted version (and drop its TTL, or it would expire again at once); refused
    after the retention window, when gc may already have reclaimed its chunks."""
    ref = _ref(ref)
    check_name(ref.name)
    n = parse_version(ref.ref) if ref.ref is not None else None
    if n is None:
        raise ArtfsError(f"give the version to restore as {ref.name}:vN (`artfs ls {ref.name} --deleted`)")
    now = time.time() if now is None else now
    view = repo.view(ref.name, now)
    if n not in view.states:
        raise NotFound(f"{ref.name}:v{n} does not exist")
    state = view.states[n]
    if is_live(state):
        raise Conflict(f"{ref.name}:v{n} is not deleted")
    assert state.restorable_until is not None
    if now >= state.restorable_until:
        raise view.deleted(n)
    repo.append_lifecycle_event(ref.name, RESTORE, [n], now=now)
    return repo.version(ref.name, n)


def set_ttl(repo: Repo, ref: Ref | str, ttl: float | str | None, now: float | None = None
            ) -> tuple[VersionRecord, float | None]:
    """Give a live version a time to live counted from its creation (None removes it); returns the record
    and when it expires. A TTL already past takes effect now, not in the past (it stays restorable)."""
    ref = _ref(ref)
    check_name(ref.name)
    seconds = parse_ttl(ttl)
    now = time.time() if now is None else now
    view = repo.view(ref.name, now)
    n = _number(repo, view, ref)
    if not is_live(view.states[n]):
        raise view.deleted(n)
    rec = repo.version(ref.name, n)
    expires = None if seconds is None else rec.created + seconds
    repo.append_lifecycle_event(ref.name, TTL, [n], ttl=seconds, expires=expires, now=now)
    return rec, None if expires is None else max(expires, now)


@dataclass(frozen=True)
class DeletedVersion:
    record: VersionRecord
    state: VersionState
    restorable: bool

    def as_json(self) -> dict:
        return {"ref": self.record.ref, "artifact": self.record.artifact, "version": self.record.version,
                "deleted_at": self.state.deleted_at, "restorable_until": self.state.restorable_until,
                "restorable": self.restorable, "bytes": self.record.bytes, "files": self.record.files,
                "created": self.record.created, "message": self.record.message, "whole": self.state.whole}


def deleted_versions(repo: Repo, name: str | None = None, now: float | None = None) -> list[DeletedVersion]:
    """Soft-deleted versions (of `name`, or of every artifact), oldest deletion first."""
    now = time.time() if now is None else now
    if name is not None:
        check_name(name)
        view = repo.view(name, now)
        if not view.numbers:
            raise NotFound(f"artifact {name!r} does not exist in {repo.store.uri}")
        views = {name: view}
    else:
        views = repo.views(now)
    out = []
    for art, view in views.items():
        for n, state in view.states.items():
            if not is_live(state):
                assert state.restorable_until is not None
                out.append(DeletedVersion(repo.version(art, n), state, now < state.restorable_until))
    out.sort(key=lambda d: (d.state.deleted_at or 0.0, d.record.artifact, d.record.version))
    return out


@dataclass(frozen=True)
class RetainPlan:
    name: str
    drop: list[VersionRecord]
    keep: list[int]
    freed_bytes: int  # stored bytes of chunks that only the dropped versions reference (within `name`)
    blocked: dict[int, list[str]]  # old versions an alias points at, without keep_aliased: refused

    def as_json(self) -> dict:
        return {"artifact": self.name, "delete": [r.ref for r in self.drop], "keep": [f"v{n}" for n in self.keep],
                "freed_bytes": self.freed_bytes,
                "aliased": {f"{self.name}:v{n}": aliases for n, aliases in sorted(self.blocked.items())}}

    def refusal(self) -> str | None:
        """Why applying the plan is refused: old versions that aliases point at (as `rm` refuses them)."""
        if not self.blocked:
            return None
        which = ", ".join(f"v{n} ({', '.join(a)})" for n, a in sorted(self.blocked.items()))
        return (f"{self.name}: aliases point at {which}: give --keep-aliased to keep such versions, or move "
                f"the aliases; nothing was deleted")


def retain_plan(repo: Repo, name: str, keep_last: int, keep_aliased: bool = False,
                now: float | None = None) -> RetainPlan:
    """Which live versions `retain --keep-last N` deletes: all but the newest N; with `keep_aliased` not
    those a user alias points at. Without it, such versions are `blocked`: applying the plan is refused
    (as `rm` refuses a version an alias points at), and a dry run lists them.

    `freed_bytes` is an estimate from the manifests: the stored (compressed) size of each distinct chunk
    that a dropped version references and no remaining version of this artifact (live, or deleted and
    still restorable) does. Chunks shared with other artifacts are counted as freed, so it is an upper
    bound; the space returns when gc runs after the retention window."""
    if keep_last < 0:
        raise ArtfsError("--keep-last must be 0 or more")
    check_name(name)
    now = time.time() if now is None else now
    view = repo.view(name, now)
    if not view.numbers:
        raise NotFound(f"artifact {name!r} does not exist in {repo.store.uri}")
    live = view.live
    holders: dict[int, list[str]] = {}
    for alias, v in sorted(view.all_aliases.items()):
        holders.setdefault(v, []).append(alias)
    newest = set(live[-keep_last:]) if keep_last else set()
    old = [n for n in live if n not in newest]
    blocked = {} if keep_aliased else {n: holders[n] for n in old if n in holders}
    keep = [n for n in live if n in newest or n in holders]
    drop = [repo.version(name, n) for n in old if n not in holders]
    remaining = [n for n, s in view.states.items() if n in keep or (
        not is_live(s) and s.restorable_until is not None and now < s.restorable_until)]
    kept_chunks: set[bytes] = set()
    for n in remaining:
        kept_chunks |= {d for d, _ in _chunks(repo, repo.version(name, n))}
    freed: dict[bytes, int] = {}
    for rec in drop:
        for digest, stored in _chunks(repo, rec):
            if digest not in kept_chunks:
                freed[digest] = stored
    return RetainPlan(name, drop, keep, sum(freed.values()), blocked)


def _chunks(repo: Repo, rec: VersionRecord) -> list[tuple[bytes, int]]:
    _, entries = read_manifest(repo.manifest_file(rec.manifest), rec.manifest)
    return [(digest, stored) for e in entries for digest, _, _, stored, _, flags in e.refs_raw()
            if not flags & FLAG_SOURCE]  # a reference's bytes are not in the store: deleting frees none


def apply_retain(repo: Repo, plan: RetainPlan, now: float | None = None) -> DeleteResult | None:
    """Soft-delete what `plan` drops, as one record (None when it drops nothing)."""
    refusal = plan.refusal()
    if refusal is not None:
        raise Conflict(refusal)
    if not plan.drop:
        return None
    now = time.time() if now is None else now
    numbers = [r.version for r in plan.drop]
    view = repo.view(plan.name, now)
    for n in numbers:  # re-checked: an alias may have moved onto one since the plan was made
        if not is_live(view.states.get(n, VersionState(now, None, now))):
            raise Conflict(f"{plan.name}:v{n} changed since the plan was made (it is deleted); run retain again")
        if n in view.all_aliases.values():
            raise Conflict(f"{plan.name}:v{n} got an alias since the plan was made; run retain again")
    repo.append_lifecycle_event(plan.name, DELETE, numbers, now=now)
    return DeleteResult(plan.name, numbers, [], now + repo.retention_window(), repo.view(plan.name, now).latest)
