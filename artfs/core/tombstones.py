"""Which versions are live: the lifecycle log (`artifacts/<name>/deleted/…`) replayed, at a given time.

Pure functions of the records, so the repo (resolve, publish), the mount's catalog poll and garbage
collection all decide the same way. A version is soft-deleted by a tombstone (`artfs rm`), or when its
TTL runs out — counted from its creation, never earlier than the moment the TTL was set, and never while a
user alias points at it (it goes when the alias moves). A deleted version stays restorable for the store's
retention window; after that its chunks are garbage. Version records are never removed, so version
numbers are never reused (repo.py claims highest-ever + 1).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from artfs.core.records import DELETE, RESTORE, TTL, AliasEvent, LifecycleEvent


@dataclass(frozen=True)
class VersionState:
    """A version's life now: all None while live with no TTL."""

    deleted_at: float | None  # soft-deleted at (tombstone time, or when its TTL expired), else None
    expires_at: float | None  # when a TTL soft-deletes (or soft-deleted) it, None if no TTL
    restorable_until: float | None  # deleted_at + the store's retention window, None while live
    whole: bool = False  # deleted with its whole artifact (`artfs rm NAME`)


LIVE = VersionState(None, None, None)


def is_live(state: VersionState) -> bool:
    return state.deleted_at is None


def alias_holds(events: Iterable[AliasEvent]) -> tuple[dict[str, int], dict[int, float]]:
    """The user aliases now (alias → version), and for each version the last time an alias left it
    (when a TTL that expired while it was held takes effect)."""
    current: dict[str, int] = {}
    released: dict[int, float] = {}
    for ev in events:
        before = current.get(ev.alias)
        if before is not None and before != ev.version:
            released[before] = max(released.get(before, 0.0), ev.time)
        if ev.version is None:
            current.pop(ev.alias, None)
        else:
            current[ev.alias] = ev.version
    return current, released


def replay(
    numbers: Sequence[int],
    events: Iterable[LifecycleEvent],
    alias_events: Iterable[AliasEvent],
    window: float,
    now: float,
) -> dict[int, VersionState]:
    """Every version number in `numbers` → its state at `now`. Events name versions; those naming a
    number that has no record are ignored (a record written by someone else must not break a listing)."""
    known = set(numbers)
    tomb: dict[int, tuple[float, bool]] = {}
    expiry: dict[int, float] = {}
    for ev in events:
        for n in ev.versions:
            if n not in known:
                continue
            if ev.kind == DELETE:
                tomb.setdefault(n, (ev.time, ev.whole))
            elif ev.kind == RESTORE:
                tomb.pop(n, None)
                expiry.pop(n, None)
            elif ev.kind == TTL:
                if ev.expires is None:
                    expiry.pop(n, None)
                else:  # a TTL set on an old version takes effect from when it was set, not in the past
                    expiry[n] = max(ev.expires, ev.time)
    held, released = alias_holds(alias_events)
    held_versions = set(held.values())
    out: dict[int, VersionState] = {}
    for n in sorted(known):
        expires = expiry.get(n)
        by_ttl = None
        if expires is not None and n not in held_versions:
            at = max(expires, released.get(n, expires))
            if at <= now:
                by_ttl = at
        by_tomb, whole = tomb.get(n, (None, False))
        times = [t for t in (by_tomb, by_ttl) if t is not None]
        if not times:
            out[n] = VersionState(None, expires, None) if expires is not None else LIVE
        else:
            deleted = min(times)
            out[n] = VersionState(deleted, expires, deleted + window, whole and deleted == by_tomb)
    return out


def live_numbers(states: dict[int, VersionState]) -> list[int]:
    """The live versions, ascending: the last is `latest`."""
    return [n for n, s in sorted(states.items()) if is_live(s)]


def live_aliases(aliases: dict[str, int], states: dict[int, VersionState]) -> dict[str, int]:
    """Aliases never resolve to a deleted version: those pointing at one are hidden (back if restored)."""
    return {a: v for a, v in aliases.items() if v in states and is_live(states[v])}


def format_time(ts: float) -> str:
    """A moment in messages: UTC, to the minute, as a user reads it back (`2026-12-08 14:03 UTC`)."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))
