"""What a store holds at the artifact level: names, live versions, aliases — read with one LIST.

The mount polls this every `--poll` seconds, so it must stay cheap for a store of many artifacts: one
listing of `artifacts/` yields every version number, alias and lifecycle sequence number at once; alias
and lifecycle events (deletes, restores, TTLs: core/tombstones.py) are fetched (and cached in the index)
only for artifacts whose logs grew since the previous scan. Which versions are live is then replayed from
the cached events at the scan's clock — a TTL expires at the first poll after its time with no new key.
Blocking: call `scan` from a worker thread. The keys it parses are those of store_keys.py.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from artfs.core.names import check_name
from artfs.core.records import AliasEvent, LifecycleEvent
from artfs.core.repo import Repo
from artfs.core.store_keys import ALIASES, ARTIFACTS, DELETED, VERSIONS, parse_record_key
from artfs.core.tombstones import live_aliases, live_numbers, replay
from artfs.errors import ArtfsError, InvalidName

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class ArtifactState:
    """One artifact as last seen: its live version numbers (ascending) and its custom aliases → version
    (only those pointing at live versions), with the logs they were replayed from."""

    numbers: tuple[int, ...]
    aliases: dict[str, int] = field(default_factory=dict)
    alias_seqs: tuple[int, ...] = ()
    alias_events: tuple[AliasEvent, ...] = ()
    deleted_seqs: tuple[int, ...] = ()
    events: tuple[LifecycleEvent, ...] = ()

    @property
    def latest(self) -> int:
        return self.numbers[-1]

    def links(self) -> dict[str, int]:
        """Every symlink of the artifact directory: `latest` and the custom aliases."""
        return {"latest": self.latest, **self.aliases}


Catalog = dict[str, ArtifactState]


def scan(repo: Repo, previous: Catalog | None = None, now: float | None = None) -> Catalog:
    """The store's artifacts now (`now`: the clock, injectable), those with at least one live version.
    Alias and lifecycle logs are re-read only where they changed since `previous`."""
    previous = previous or {}
    now = time.time() if now is None else now
    found: dict[str, dict[str, list[int]]] = defaultdict(lambda: {VERSIONS: [], ALIASES: [], DELETED: []})
    for key in repo.store.list(ARTIFACTS):
        parsed = parse_record_key(key)
        if parsed is not None:
            found[parsed.artifact][parsed.kind].append(parsed.number)
    out: Catalog = {}
    window: float | None = None
    for name, kinds in found.items():
        if not kinds[VERSIONS]:
            continue
        try:
            check_name(name)
        except InvalidName:
            log.warning("store %s: ignoring artifact with an invalid name %r", repo.store.uri, name)
            continue
        before = previous.get(name)
        seqs = tuple(sorted(kinds[ALIASES]))
        alias_events, seqs = _log(name, "aliases", seqs, before.alias_seqs if before else None,
                                  before.alias_events if before else (), repo.alias_log)
        dseqs = tuple(sorted(kinds[DELETED]))
        events, dseqs = _log(name, "lifecycle records", dseqs, before.deleted_seqs if before else None,
                             before.events if before else (), repo.lifecycle_log)
        if events and window is None:
            try:
                window = repo.retention_window()
            except ArtfsError as e:  # the window only dates restorability: the default is safe to show
                log.warning("store %s: cannot read its format record: %s", repo.store.uri, e)
                window = 0.0
        numbers = sorted(kinds[VERSIONS])
        states = replay(numbers, events, alias_events, window or 0.0, now)
        live = live_numbers(states)
        if not live:  # every version deleted: the artifact is gone from the mount (restorable meanwhile)
            continue
        aliases = live_aliases(Repo.replay_aliases(list(alias_events)), states)
        out[name] = ArtifactState(tuple(live), aliases, seqs, alias_events, dseqs, events)
    return out


def _log(name: str, what: str, seqs: tuple[int, ...], before_seqs: tuple[int, ...] | None,
         before: tuple[T, ...], read: Callable[[str, list[int]], list[T]]) -> tuple[tuple[T, ...], tuple[int, ...]]:
    """A log's events: the previous scan's if its sequence numbers did not change, else read again (a bad
    record keeps the previous events: it must not hide the artifact's versions)."""
    if before_seqs == seqs:
        return before, seqs
    if not seqs:
        return (), seqs
    try:
        return tuple(read(name, list(seqs))), seqs
    except ArtfsError as e:
        log.warning("artifact %s: cannot read its %s: %s", name, what, e)
        return before, before_seqs or ()
