"""Runs in the store: a run's start, heartbeats, end, inputs and outputs, and the queries over them.

The records are msgspec structs defined in run_records.py and encoded with records.encode; their keys are
built in store_keys.py (the layout is described there). Every write is create-if-absent and nothing is rewritten,
so any number of processes on any number of machines record runs into one store at once and nothing is
lost: what could have been an update is a new object instead.
- Inputs are cumulative snapshots: a source (a mount daemon, or "api") writes a new, larger snapshot of
  what it saw the run read of one version; a reader keeps, per version, the largest snapshot of each
  source and sums across sources.
- Status: an end record says finished or failed (the first end written wins); without one, a run whose
  newest heartbeat (or start) is older than HEARTBEAT_MISSES intervals crashed, else it is running.
- The queries cost O(what they return), not O(all runs): a run's keys share a prefix; `runs/` lists the
  newest first (inverted ids, one directory per day, and `run-days/` names the days); the newest
  heartbeat is found through `heartbeat-hours/`; `lineage/used/<name>/<v>/` is the reverse index for
  runs_using. Measured on 10,000 runs and 1,000 versions: bench/table_runs.py.
- The empty keys written once per day, hour or input version are remembered by the process that wrote
  them (_marker), so repeating them costs nothing; another process writes them once more, harmlessly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from artfs.core.names import check_name
from artfs.core.records import VersionRecord, creator, encode
from artfs.core.run_records import (
    DEFAULT_HEARTBEAT,
    RunEnd,
    RunInfo,
    RunInput,
    RunOutput,
    RunRecord,
    check_run_id,
    check_source,
    decode_run_record,
    is_run_id,
    new_run_id,
)
from artfs.core.store_keys import (
    RUN_DAYS,
    RUNS,
    heartbeat_hour,
    heartbeat_hour_key,
    heartbeat_key,
    heartbeat_prefix,
    parse_heartbeat_hour_key,
    parse_heartbeat_key,
    parse_run_day_key,
    parse_run_input_key,
    parse_run_key,
    parse_run_output_key,
    run_day_key,
    run_day_prefix,
    run_end_key,
    run_events_prefix,
    run_input_key,
    run_key,
    run_output_key,
    used_key,
    used_prefix,
)
from artfs.errors import ArtfsError, Conflict, IntegrityError, NotFound, StoreNotFound
from artfs.storage.store import Store

log = logging.getLogger(__name__)

RUN_ENV = "ARTFS_RUN_ID"  # set by `artfs run` for CMD; read ONLY via artfs/settings.py (Settings.run_id)
HEARTBEAT_MISSES = 3  # a run with no end whose heartbeats stopped this many intervals ago crashed
STATUSES = ("running", "finished", "failed", "crashed")
HOWS = ("observed", "declared")
_QUERY_THREADS = 8  # runs read at once by list_runs


class Repo(Protocol):
    """What runs need of a core.repo.Repo: its store. (repo.py calls record_output when it publishes for a
    run, so this module cannot import it back.)"""

    @property
    def store(self) -> Store: ...


def git_head(cwd: str) -> str | None:
    """The commit checked out in `cwd` when it is in a git work tree; None otherwise or on any error."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", sha) else None


# --- writing ---------------------------------------------------------------------------------------


def start_run(
    repo: Repo,
    *,
    name: str | None = None,
    job_type: str | None = None,
    config: dict[str, Any] | None = None,
    command: Sequence[str] = (),
    cwd: str | None = None,
    run_id: str | None = None,
    git_commit: str | None = None,
    heartbeat: float = DEFAULT_HEARTBEAT,
    now: float | None = None,
) -> RunRecord:
    """Record a run's start and return it. `git_commit` None: the commit of `cwd`, if it is a git work tree.
    A `run_id` that exists already is a Conflict (a start is never rewritten)."""
    now = time.time() if now is None else now
    run_id = check_run_id(run_id) if run_id is not None else new_run_id(now)
    job_type = check_name(job_type or "run", "job type")
    cwd = os.path.abspath(cwd or os.getcwd())
    rec = RunRecord(
        id=run_id, name=name or run_id, job_type=job_type, config=dict(config or {}), command=list(command),
        cwd=cwd, git_commit=git_commit if git_commit is not None else git_head(cwd), creator=creator(),
        host=socket.gethostname(), pid=os.getpid(), started=now, heartbeat=max(float(heartbeat), 0.0),
    )
    try:
        data = encode(rec)
    except (TypeError, ValueError, OverflowError) as e:
        raise ArtfsError(f"run config cannot be stored as JSON: {e}") from None
    _marker(repo, run_day_key(run_id[:8]))  # before the start: a reader listing the days finds every run
    if not repo.store.create_if_absent(run_key(run_id), data):
        raise Conflict(f"run {run_id} already exists")
    return rec


_markers: set[tuple[str, str]] = set()  # (store, key) of the empty keys this process has written
_markers_lock = threading.Lock()


def _marker(repo: Repo, key: str) -> None:
    """Write an empty key (a day's, an hour's, a reverse-index entry) once per process: again, it would
    cost a conditional write every time and change nothing."""
    memo = (repo.store.uri, key)
    with _markers_lock:
        if memo in _markers:
            return
    repo.store.create_if_absent(key, b"")
    with _markers_lock:
        _markers.add(memo)


def heartbeat(repo: Repo, run_id: str, now: float | None = None) -> None:
    """Say the run is alive: one empty object whose key is the time, under its hour, whose own key is
    written first (once an hour per process), so the newest heartbeat is found without listing them all."""
    now = time.time() if now is None else now
    _marker(repo, heartbeat_hour_key(check_run_id(run_id), heartbeat_hour(now)))
    repo.store.create_if_absent(heartbeat_key(run_id, now), b"")


def end_run(repo: Repo, run_id: str, status: str, exit_code: int | None = None,
            now: float | None = None) -> None:
    """Record the end: `finished`, or `failed` with the exit code when there is one. The first end written
    wins; a second end is ignored (logged), since records are never rewritten."""
    if status not in ("finished", "failed"):
        raise ValueError(f"a run ends finished or failed, not {status!r}")
    end = RunEnd(status=status, time=time.time() if now is None else now, exit_code=exit_code)
    if not repo.store.create_if_absent(run_end_key(check_run_id(run_id)), encode(end)):
        log.info("run %s had already ended; its first end record stands", run_id)


def record_input(repo: Repo, run_id: str, rec: VersionRecord, how: str, files: int, nbytes: int,
                 source: str, now: float | None = None) -> None:
    """Record that `source` saw run `run_id` read `files` files, `nbytes` bytes of version `rec` so far.

    Cumulative: call again with larger counts (a new, larger snapshot; the same counts again cost one
    conditional write and change nothing). The reverse-index entry is written first, so a run whose input
    can be read is always found by runs_using."""
    check_run_id(run_id)
    check_source(source)
    if how not in HOWS:
        raise ValueError(f"how must be one of {HOWS}, not {how!r}")
    if files < 0 or nbytes < 0:
        raise ValueError("files and bytes read cannot be negative")
    _marker(repo, used_key(rec.artifact, rec.version, run_id))
    snap = RunInput(artifact=rec.artifact, version=rec.version, digest=rec.digest, how=how, files=files,
                    bytes=nbytes, source=source, time=time.time() if now is None else now)
    repo.store.create_if_absent(run_input_key(run_id, rec.artifact, rec.version, source, files, nbytes),
                                encode(snap))


def record_output(repo: Repo, run_id: str, rec: VersionRecord, now: float | None = None) -> None:
    """Record that the run published `rec` (its version record names the run too; this makes the run's
    outputs one LIST away)."""
    out = RunOutput(artifact=rec.artifact, version=rec.version, digest=rec.digest,
                    time=time.time() if now is None else now)
    repo.store.create_if_absent(run_output_key(check_run_id(run_id), rec.artifact, rec.version), encode(out))


# --- reading ---------------------------------------------------------------------------------------


def _start_record(repo: Repo, run_id: str) -> RunRecord:
    key = run_key(check_run_id(run_id))
    try:
        data = repo.store.get(key)
    except StoreNotFound:
        raise NotFound(f"run {run_id} does not exist") from None
    rec = decode_run_record(data, key, RunRecord)
    if rec.id != run_id:
        raise IntegrityError(f"run record {key} rejected: it does not describe run {run_id}")
    return rec


def run_exists(repo: Repo, run_id: str) -> bool:
    """Whether this store holds run `run_id` (one HEAD-sized read): a version made inside a run names it
    only in the run's own store."""
    return repo.store.exists(run_key(check_run_id(run_id)))


def _merge_inputs(repo: Repo, run_id: str, keys: list[str]) -> list[RunInput]:
    """Per version: the largest snapshot of each source (one GET each), summed across sources."""
    best: dict[tuple[str, int, str], tuple[tuple[int, int], str]] = {}
    for key in keys:
        parsed = parse_run_input_key(key, run_id)
        if parsed is None:
            continue
        slot = (parsed.artifact, parsed.version, parsed.source)
        counts = (parsed.files, parsed.bytes)
        if slot not in best or counts > best[slot][0]:
            best[slot] = (counts, key)
    merged: dict[tuple[str, int], list[RunInput]] = {}
    for (artifact, version, _source), (_counts, key) in sorted(best.items()):
        try:
            snap = decode_run_record(repo.store.get(key), key, RunInput)
        except (StoreNotFound, IntegrityError) as e:
            log.warning("skipping input record %s: %s", key, e)
            continue
        merged.setdefault((artifact, version), []).append(snap)
    out = []
    for (artifact, version), snaps in merged.items():
        hows = sorted({s.how for s in snaps})
        out.append(RunInput(
            artifact=artifact, version=version, digest=snaps[0].digest, how="+".join(hows),
            files=sum(s.files for s in snaps), bytes=sum(s.bytes for s in snaps),
            source=",".join(s.source for s in snaps), time=min(s.time for s in snaps),
        ))
    return out


def _last_heartbeat(repo: Repo, run_id: str, keys: list[str]) -> float | None:
    """The newest heartbeat: the newest hour's first key (times are inverted, so LISTs yield newest first).
    An hour whose heartbeat was never written (its writer died between the two) is passed over."""
    for hour_key in keys:
        hour = parse_heartbeat_hour_key(hour_key, run_id)
        if hour is None:
            continue
        for key in repo.store.list(heartbeat_prefix(run_id, hour)):
            t = parse_heartbeat_key(key, run_id)
            if t is not None:
                return t
    return None


def _info(repo: Repo, rec: RunRecord, now: float | None) -> RunInfo:
    """One LIST of the run's events (end, inputs, outputs, heartbeat hours), then only what it names."""
    run_id = rec.id
    keys = list(repo.store.list(run_events_prefix(run_id)))
    end: RunEnd | None = None
    if run_end_key(run_id) in keys:
        with contextlib.suppress(StoreNotFound):
            end = decode_run_record(repo.store.get(run_end_key(run_id)), run_end_key(run_id), RunEnd)
    last = _last_heartbeat(repo, run_id, keys)
    if end is not None:
        status = end.status if end.status in ("finished", "failed") else "failed"
    else:
        now = time.time() if now is None else now
        alive = max(last or rec.started, rec.started)
        stale = rec.heartbeat > 0 and now - alive > HEARTBEAT_MISSES * rec.heartbeat
        status = "crashed" if stale else "running"
    outputs = sorted(o for o in (parse_run_output_key(k, run_id) for k in keys) if o is not None)
    return RunInfo(
        record=rec, status=status, ended=end.time if end else None, exit_code=end.exit_code if end else None,
        last_heartbeat=last, inputs=_merge_inputs(repo, run_id, keys), outputs=outputs,
    )


def run_info(repo: Repo, run_id: str, now: float | None = None) -> RunInfo:
    """Everything about one run; NotFound for an unknown id. `now` decides staleness (tests inject it)."""
    return _info(repo, _start_record(repo, run_id), now)


def _ids(keys: Iterable[str]) -> list[str]:
    found = (parse_run_key(key) for key in keys)
    return [i for i in found if i is not None and is_run_id(i)]


def run_ids(repo: Repo, limit: int | None = None) -> list[str]:
    """Run ids, newest first (keys list in that order), no GETs. With a limit, only the newest days are
    listed: one LIST of the days, then one per day until there are enough."""
    if limit is None:
        return _ids(repo.store.list(RUNS))
    out: list[str] = []
    if limit <= 0:
        return out
    days = (parse_run_day_key(k) for k in repo.store.list(RUN_DAYS))
    for day in days:
        if day is None:
            continue
        out += _ids(repo.store.list(run_day_prefix(day)))
        if len(out) >= limit:
            break
    return out[:limit]


def list_runs(repo: Repo, limit: int | None = None, now: float | None = None) -> list[RunInfo]:
    """The runs, newest first, at most `limit`: O(limit) GETs, a few runs at a time (each is a handful of
    small requests, which on S3 cost their latency). A run whose start record cannot be read is skipped
    with a warning rather than hiding the others."""

    def one(run_id: str) -> RunInfo | None:
        try:
            return run_info(repo, run_id, now)
        except (NotFound, IntegrityError) as e:
            log.warning("skipping run %s: %s", run_id, e)
            return None

    ids = run_ids(repo, limit)
    if len(ids) <= 1:
        found = [one(i) for i in ids]
    else:
        with ThreadPoolExecutor(min(_QUERY_THREADS, len(ids)), thread_name_prefix="artfs-runs") as pool:
            found = list(pool.map(one, ids))
    return [info for info in found if info is not None]


def runs_using(repo: Repo, artifact: str, version: int) -> list[str]:
    """The ids of the runs that used `artifact:v<version>`, oldest first: one LIST of the reverse index."""
    check_name(artifact)
    prefix = used_prefix(artifact, version)
    ids = (key[len(prefix) :] for key in repo.store.list(prefix))
    return [i for i in ids if is_run_id(i)]


def producing_run(repo: Repo, rec: VersionRecord) -> str | None:
    """The run that made a version: its record says so (written with the version, never separately)."""
    return rec.run
