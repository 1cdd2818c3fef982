"""The store layout: every key artfs reads or writes in a store is built and parsed here, and nowhere else.

Keys are relative to the store's root (see storage/store.py):
    packs/<id[:2]>/<id>                        chunk packs (packs.py), named by a random id
    manifests/<id[:2]>/<id>                    manifests, named by the xxh3-128 of their bytes
    artifacts/<name>/versions/<n:010d>.json    version records, each claimed with create-if-absent
    artifacts/<name>/aliases/<seq:010d>.json   alias moves, an append-only log claimed the same way
    quarantine/<digest>/<pack>                 a chunk location that failed verification (records.py):
                                               no commit on any machine dedups against it again
    relocations/<digest>/<pack>                where a good copy of a bad one lives (damage.py)

Packs and manifests are immutable and fanned out by the first two hex digits of their names. Record numbers
are zero-padded to ten digits so that a LIST, which is lexicographic, returns them in numeric order, and
claiming the next one with create-if-absent is what makes concurrent publishing safe (repo.py).

Everything under `artifacts/` is read by the mount's poll, one LIST of the whole prefix every few seconds
(catalog.py): what a mount must show goes there, and nothing else, since every key under it lengthens
every poll. Where the keys of planned features go (none is written yet; each gets its builder here):
    runs/…                       runs and lineage (issue 10): outside `artifacts/`, so the poll does not
                                 grow with the number of runs
    artifacts/<name>/deleted/…   deletion markers (tombstones, issue 12), claimed with create-if-absent:
                                 inside `artifacts/`, so the poll that lists versions also sees them hidden
    format.json, gc/…            the store's format version, gc's lease and what keeps chunks alive
                                 (issue 12): top-level, outside `artifacts/`, like runs
    (no key)                     references to external objects (issue 11) are manifest entries
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

ARTIFACTS = "artifacts/"
QUARANTINE = "quarantine/"
RELOCATIONS = "relocations/"
VERSIONS = "versions"
ALIASES = "aliases"


def pack_key(pack_id: str) -> str:
    return f"packs/{pack_id[:2]}/{pack_id}"


def manifest_key(mid: str) -> str:
    return f"manifests/{mid[:2]}/{mid}"


def quarantine_key(digest: bytes, pack: str) -> str:
    return f"{QUARANTINE}{digest.hex()}/{pack}"


def relocation_key(digest: bytes, pack: str) -> str:
    return f"{RELOCATIONS}{digest.hex()}/{pack}"


def parse_quarantine_key(key: str) -> tuple[bytes, str] | None:
    """`quarantine/<digest hex>/<pack>` → (digest, pack); None for any other key."""
    parts = key.split("/")
    if len(parts) != 3 or parts[0] + "/" != QUARANTINE or len(parts[1]) != 32 or not parts[2]:
        return None
    try:
        return bytes.fromhex(parts[1]), parts[2]
    except ValueError:
        return None


def versions_prefix(name: str) -> str:
    return f"{ARTIFACTS}{name}/{VERSIONS}/"


def aliases_prefix(name: str) -> str:
    return f"{ARTIFACTS}{name}/{ALIASES}/"


def version_key(name: str, number: int) -> str:
    return f"{versions_prefix(name)}{number:010d}.json"


def alias_key(name: str, seq: int) -> str:
    return f"{aliases_prefix(name)}{seq:010d}.json"


def _record_number(leaf: str) -> int | None:
    """`0000000003.json` → 3; None for any other name."""
    if len(leaf) == 15 and leaf.endswith(".json") and leaf[:10].isdigit():
        return int(leaf[:10])
    return None


def record_numbers(keys: Iterable[str], prefix: str) -> list[int]:
    """The numbers of the records among `keys` listed under `prefix` (`versions_prefix` or
    `aliases_prefix`), ascending; keys that are not records are skipped."""
    out = []
    for key in keys:
        n = _record_number(key[len(prefix) :])
        if n is not None:
            out.append(n)
    return sorted(out)


class RecordKey(NamedTuple):
    artifact: str
    kind: str  # VERSIONS or ALIASES
    number: int


def parse_record_key(key: str) -> RecordKey | None:
    """`artifacts/<name>/versions/<n>.json` or `…/aliases/<seq>.json` → its parts; None for any other key."""
    parts = key.split("/")
    if len(parts) != 4 or parts[0] + "/" != ARTIFACTS or parts[2] not in (VERSIONS, ALIASES):
        return None
    n = _record_number(parts[3])
    return RecordKey(parts[1], parts[2], n) if n is not None else None
