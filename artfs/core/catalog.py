"""What a store holds at the artifact level: names, version numbers, aliases — read with one LIST.

The mount polls this every `--poll` seconds, so it must stay cheap for a store of many artifacts: one
listing of `artifacts/` yields every version number and alias sequence number at once; alias events are
fetched (and cached in the index) only for artifacts whose alias log grew since the previous scan.
Blocking: call `scan` from a worker thread. The keys it parses are those of store_keys.py.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field

from artfs.core.names import check_name
from artfs.core.repo import Repo
from artfs.core.store_keys import ALIASES, ARTIFACTS, VERSIONS, parse_record_key
from artfs.errors import ArtfsError, InvalidName

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArtifactState:
    """One artifact as last seen: its version numbers (ascending) and its custom aliases → version."""

    numbers: tuple[int, ...]
    aliases: dict[str, int] = field(default_factory=dict)
    alias_seqs: tuple[int, ...] = ()

    @property
    def latest(self) -> int:
        return self.numbers[-1]

    def links(self) -> dict[str, int]:
        """Every symlink of the artifact directory: `latest` and the custom aliases."""
        return {"latest": self.latest, **self.aliases}


Catalog = dict[str, ArtifactState]


def scan(repo: Repo, previous: Catalog | None = None) -> Catalog:
    """The store's artifacts now. Alias logs are re-read only where they changed since `previous`."""
    previous = previous or {}
    versions: dict[str, list[int]] = defaultdict(list)
    alias_seqs: dict[str, list[int]] = defaultdict(list)
    for key in repo.store.list(ARTIFACTS):
        parsed = parse_record_key(key)
        if parsed is None:
            continue
        if parsed.kind == VERSIONS:
            versions[parsed.artifact].append(parsed.number)
        elif parsed.kind == ALIASES:
            alias_seqs[parsed.artifact].append(parsed.number)
    out: Catalog = {}
    for name, numbers in versions.items():
        try:
            check_name(name)
        except InvalidName:
            log.warning("store %s: ignoring artifact with an invalid name %r", repo.store.uri, name)
            continue
        seqs = tuple(sorted(alias_seqs.get(name, ())))
        before = previous.get(name)
        if before is not None and before.alias_seqs == seqs:
            aliases = before.aliases
        elif seqs:
            try:
                aliases = Repo.replay_aliases(repo.alias_log(name))
            except ArtfsError as e:  # a bad alias record must not hide the artifact's versions
                log.warning("artifact %s: cannot read its aliases: %s", name, e)
                aliases, seqs = (before.aliases, before.alias_seqs) if before else ({}, ())
        else:
            aliases = {}
        known = set(numbers)
        aliases = {a: v for a, v in aliases.items() if v in known}
        out[name] = ArtifactState(tuple(sorted(known)), aliases, seqs)
    return out
