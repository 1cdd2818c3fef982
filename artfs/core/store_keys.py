"""The store layout: every key artfs reads or writes in a store is built and parsed here, and nowhere else.

Keys are relative to the store's root (see storage/store.py):
    packs/<id[:2]>/<id>                        chunk packs (packs.py), named by a random id
    manifests/<id[:2]>/<id>                    manifests, named by the xxh3-128 of their bytes
    artifacts/<name>/versions/<n:010d>.json    version records, each claimed with create-if-absent
    artifacts/<name>/aliases/<seq:010d>.json   alias moves, an append-only log claimed the same way
    artifacts/<name>/deleted/<seq:010d>.json   lifecycle events (delete, restore, TTL): an append-only log
                                               claimed the same way (core/tombstones.py replays it)
    format.json                                the store's format version, features in use, retention
                                               window (core/store_format.py)
    quarantine/<digest>/<pack>                 a chunk location that failed verification (records.py):
                                               no commit on any machine dedups against it again
    relocations/<digest>/<pack>                where a good copy of a bad one lives (damage.py)

Packs and manifests are immutable and fanned out by the first two hex digits of their names. Record numbers
are zero-padded to ten digits so that a LIST, which is lexicographic, returns them in numeric order, and
claiming the next one with create-if-absent is what makes concurrent publishing safe (repo.py).

Everything under `artifacts/` is read by the mount's poll, one LIST of the whole prefix every few seconds
(catalog.py): what a mount must show goes there, and nothing else, since every key under it lengthens
every poll. Where the keys of other features go (each gets its builder here):
    runs/<inverted day>/<inverted id>.json      a run's start record (core/runs.py), written once; the
                                        digits of the id (and of its UTC day, its first 8) are inverted
                                        (9-d), so a LIST yields the newest run first
    run-days/<inverted day>             one empty key per day that has runs, written before their start
                                        records: the newest N runs are found by listing only the newest days
    run-heartbeats/<id>/<inverted hour>/<inverted ms>   empty objects, the newest listed first: a
                                        run whose heartbeats stopped with no end record crashed
    run-events/<id>/…                   everything else about a run, read by one LIST (run_info):
    run-events/<id>/heartbeat-hours/<inverted hour>     one per hour that has heartbeats, written before
                                        them: the newest heartbeat is one short LIST further, however long
                                        the run
    run-events/<id>/end.json            the end (finished, or failed with an exit code); the first one wins
    run-events/<id>/inputs/<name>/<v:010d>/<source>/<files:012d>-<bytes:016d>.json
                                        a cumulative snapshot of what `source` saw the run read of a
                                        version; a larger one is a new key, never a rewrite
    run-events/<id>/outputs/<name>/<v:010d>.json    a version the run published
    lineage/used/<name>/<v:010d>/<id>   reverse index: the runs that used a version (runs_using)
                                        Runs live outside `artifacts/`, so the poll does not grow with
                                        their number; every key is create-if-absent, so many machines
                                        record runs at once and nothing is rewritten or lost.
    gc/lease                     the running collector's lease (an optimisation: core/gc.py)
    gc/config.json               gc's safety margin, which every writer reads (core/gc_guard.py)
    gc/condemned/<pack>          a pack gc found unreferenced: deleted a margin later if still so
    gc/staging/<area id>         a staging area's lease on its base version's chunks (any machine)
                                 gc/ is top-level, outside `artifacts/`, like runs
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
DELETED = "deleted"  # lifecycle events: inside `artifacts/`, so the poll's one LIST sees their numbers
FORMAT = "format.json"


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


def deleted_prefix(name: str) -> str:
    return f"{ARTIFACTS}{name}/{DELETED}/"


def artifact_prefix(name: str) -> str:
    """Every record of one artifact (versions, aliases, lifecycle events): one LIST reads them all."""
    return f"{ARTIFACTS}{name}/"


def deleted_key(name: str, seq: int) -> str:
    return f"{deleted_prefix(name)}{seq:010d}.json"


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
    """The numbers of the records among `keys` listed under `prefix` (`versions_prefix`, `aliases_prefix`
    or `deleted_prefix`), ascending; keys that are not records are skipped."""
    out = []
    for key in keys:
        n = _record_number(key[len(prefix) :])
        if n is not None:
            out.append(n)
    return sorted(out)


class RecordKey(NamedTuple):
    artifact: str
    kind: str  # VERSIONS, ALIASES or DELETED
    number: int


def parse_record_key(key: str) -> RecordKey | None:
    """`artifacts/<name>/versions/<n>.json`, `…/aliases/<seq>.json` or `…/deleted/<seq>.json` → its parts;
    None for any other key."""
    parts = key.split("/")
    if len(parts) != 4 or parts[0] + "/" != ARTIFACTS or parts[2] not in (VERSIONS, ALIASES, DELETED):
        return None
    n = _record_number(parts[3])
    return RecordKey(parts[1], parts[2], n) if n is not None else None


# --- runs and lineage (core/runs.py) ---------------------------------------------------------------

RUNS = "runs/"
RUN_DAYS = "run-days/"
RUN_EVENTS = "run-events/"
RUN_HEARTBEATS = "run-heartbeats/"
LINEAGE_USED = "lineage/used/"
_INVERT = str.maketrans("0123456789", "9876543210")
_MS_DIGITS = 13


def invert_digits(text: str) -> str:
    """Each digit d → 9-d, other characters kept: ascending order of the result is descending order of the
    digits, so a LIST (always ascending) yields the newest first. Its own inverse."""
    return text.translate(_INVERT)


def run_day_prefix(day: str) -> str:
    """The start records of the runs whose id starts with `day` (YYYYMMDD, UTC)."""
    return f"{RUNS}{invert_digits(day)}/"


def run_key(run_id: str) -> str:
    return f"{run_day_prefix(run_id[:8])}{invert_digits(run_id)}.json"


def parse_run_key(key: str) -> str | None:
    """`runs/<inverted day>/<inverted id>.json` → the run id; None for any other key (runs.py checks the
    id's form)."""
    parts = key.split("/")
    if len(parts) != 3 or parts[0] + "/" != RUNS or not parts[2].endswith(".json"):
        return None
    run_id = invert_digits(parts[2][: -len(".json")])
    return run_id if run_id[:8] == invert_digits(parts[1]) else None


def run_day_key(day: str) -> str:
    return f"{RUN_DAYS}{invert_digits(day)}"


def parse_run_day_key(key: str) -> str | None:
    """`run-days/<inverted day>` → the day (YYYYMMDD); None for any other key."""
    leaf = key[len(RUN_DAYS) :] if key.startswith(RUN_DAYS) else ""
    return invert_digits(leaf) if len(leaf) == 8 and leaf.isdigit() else None


def run_events_prefix(run_id: str) -> str:
    return f"{RUN_EVENTS}{run_id}/"


_HOUR_MS = 3_600_000


def _ms(time: float) -> int:
    return min(max(int(time * 1000), 0), 10**_MS_DIGITS - 1)


def heartbeat_hour(time: float) -> int:
    return _ms(time) // _HOUR_MS


def heartbeat_hours_prefix(run_id: str) -> str:
    return f"{run_events_prefix(run_id)}heartbeat-hours/"


def heartbeat_hour_key(run_id: str, hour: int) -> str:
    return f"{heartbeat_hours_prefix(run_id)}{invert_digits(f'{hour:010d}')}"


def _under(key: str, prefix: str) -> str | None:
    return key[len(prefix) :] if key.startswith(prefix) else None


def parse_heartbeat_hour_key(key: str, run_id: str) -> int | None:
    leaf = _under(key, heartbeat_hours_prefix(run_id))
    return int(invert_digits(leaf)) if leaf is not None and len(leaf) == 10 and leaf.isdigit() else None


def heartbeat_prefix(run_id: str, hour: int | None = None) -> str:
    """All of a run's heartbeats, or those of one hour (outside `run-events/<id>/`, which run_info lists
    whole: a long run's heartbeats would lengthen that LIST)."""
    base = f"{RUN_HEARTBEATS}{run_id}/"
    return base if hour is None else f"{base}{invert_digits(f'{hour:010d}')}/"


def heartbeat_key(run_id: str, time: float) -> str:
    ms = _ms(time)
    return f"{heartbeat_prefix(run_id, ms // _HOUR_MS)}{invert_digits(f'{ms:0{_MS_DIGITS}d}')}"


def parse_heartbeat_key(key: str, run_id: str) -> float | None:
    parts = (_under(key, heartbeat_prefix(run_id)) or "").split("/")
    if len(parts) != 2 or len(parts[1]) != _MS_DIGITS or not parts[1].isdigit():
        return None
    return int(invert_digits(parts[1])) / 1000


def run_end_key(run_id: str) -> str:
    return f"{run_events_prefix(run_id)}end.json"


def run_inputs_prefix(run_id: str) -> str:
    return f"{run_events_prefix(run_id)}inputs/"


def run_input_key(run_id: str, artifact: str, version: int, source: str, files: int, nbytes: int) -> str:
    return f"{run_inputs_prefix(run_id)}{artifact}/{version:010d}/{source}/{files:012d}-{nbytes:016d}.json"


class InputKey(NamedTuple):
    artifact: str
    version: int
    source: str
    files: int
    bytes: int


def parse_run_input_key(key: str, run_id: str) -> InputKey | None:
    parts = (_under(key, run_inputs_prefix(run_id)) or "").split("/")
    if len(parts) != 4 or _record_number(parts[1] + ".json") is None:
        return None
    counts = parts[3].removesuffix(".json").split("-")
    if not parts[3].endswith(".json") or len(counts) != 2 or not all(c.isdigit() for c in counts):
        return None
    return InputKey(parts[0], int(parts[1]), parts[2], int(counts[0]), int(counts[1]))


def run_outputs_prefix(run_id: str) -> str:
    return f"{run_events_prefix(run_id)}outputs/"


def run_output_key(run_id: str, artifact: str, version: int) -> str:
    return f"{run_outputs_prefix(run_id)}{artifact}/{version:010d}.json"


def parse_run_output_key(key: str, run_id: str) -> tuple[str, int] | None:
    parts = (_under(key, run_outputs_prefix(run_id)) or "").split("/")
    n = _record_number(parts[1]) if len(parts) == 2 else None
    return (parts[0], n) if n is not None else None


def used_prefix(artifact: str, version: int) -> str:
    return f"{LINEAGE_USED}{artifact}/{version:010d}/"


def used_key(artifact: str, version: int, run_id: str) -> str:
    return f"{used_prefix(artifact, version)}{run_id}"


# --- garbage collection (core/gc.py, core/gc_guard.py) ----------------------------------------------

PACKS = "packs/"
GC_LEASE = "gc/lease"
GC_CONFIG = "gc/config.json"
CONDEMNED = "gc/condemned/"
STAGING_LEASES = "gc/staging/"


def parse_pack_key(key: str) -> str | None:
    """`packs/<id[:2]>/<id>` → the pack id; None for any other key."""
    parts = key.split("/")
    if len(parts) != 3 or parts[0] + "/" != PACKS or not parts[2] or parts[1] != parts[2][:2]:
        return None
    return parts[2]


def condemned_key(pack: str) -> str:
    return f"{CONDEMNED}{pack}"


def parse_condemned_key(key: str) -> str | None:
    pack = key[len(CONDEMNED) :] if key.startswith(CONDEMNED) else ""
    return pack if pack and "/" not in pack else None


def staging_lease_key(area_id: str) -> str:
    return f"{STAGING_LEASES}{area_id}"


def parse_relocation_key(key: str) -> tuple[bytes, str] | None:
    """`relocations/<digest hex>/<pack>` → (digest, pack); None for any other key."""
    if not key.startswith(RELOCATIONS):
        return None
    return parse_quarantine_key(QUARANTINE + key[len(RELOCATIONS) :])
