"""Table 6 (issue 10): run and lineage queries on a store that has grown — 10,000 runs, 1,000 versions.

The queries must cost O(what they return), not O(all runs): runs_using (one LIST of the reverse index),
run_info (a run's own prefix), producing_run (the version record), list_runs(limit=20) (a LIST of the
days that have runs, one of the newest day(s), then 20 runs' records). Also shown, for scale: a LIST of
every run's start record, and that the mount's poll (one LIST of `artifacts/`) sees no run key.

The store is a local directory built with the core's own writers (core/runs.py), through a LocalStore
that skips fsync while building (the layout is the same; only the build is faster). Each query is timed
one call at a time, in a process with a fresh cache (a version record is read from the store, not from
the local index); the page cache is not dropped (a directory store's metadata is in memory, as it would
be on a busy machine). Figures: median and 95th percentile of the calls, in ms.

    python -m bench.table_runs [--quick] [--runs N] [--versions N] [--reps N]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Callable

from artfs.core import runs
from artfs.core.places import Places
from artfs.core.records import VersionRecord, encode
from artfs.core.repo import Repo
from artfs.core.store_keys import ARTIFACTS, version_key
from artfs.storage.local import LocalStore
from bench.common import fmt_num, fresh_dir, log, md_table, remove_tree, temp_dir

NAME = "runs"
ARTIFACTS_N = 20  # the versions are spread over this many artifacts
INPUTS_PER_RUN = 2
HEARTBEATS_PER_RUN = 3
CALLS = 200  # calls timed per query and repetition
T0 = 1_790_000_000.0


class _BuildStore(LocalStore):
    """The directory store, written the quick way for building a big store: O_EXCL instead of a temp file
    linked into place, no fsync. Same keys; create-if-absent still refuses an existing key."""

    def create_if_absent(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        return True


def build(root: str, n_runs: int, n_versions: int, seed: int = 10) -> tuple[list[str], list[VersionRecord]]:
    """A store with `n_runs` runs (each read INPUTS_PER_RUN versions; one in ten made a version; most ended,
    some crashed) and `n_versions` versions, each made by a run."""
    rng = random.Random(seed)
    repo = Repo(_BuildStore(os.path.join(root, "store")), Places.under(os.path.join(root, "build")))
    try:
        ids = [runs.start_run(repo, name=f"run-{i}", job_type="train", config={"lr": 0.01, "i": i},
                              command=["python", "train.py"], cwd="/", git_commit="", heartbeat=10,
                              now=T0 + i * 60).id for i in range(n_runs)]
        per = max(n_versions // ARTIFACTS_N, 1)
        versions = []
        for k in range(n_versions):
            name, number = f"data-{k // per}", k % per
            run_id = ids[rng.randrange(n_runs)]
            rec = VersionRecord(artifact=name, version=number, type="dataset", digest=f"{k:032x}",
                                manifest=f"{k:032x}", files=100, bytes=10**6, created=T0, creator="b@h",
                                run=run_id)
            repo.store.create_if_absent(version_key(name, number), encode(rec))
            runs.record_output(repo, run_id, rec)
            versions.append(rec)
        for i, run_id in enumerate(ids):
            started = T0 + i * 60
            for rec in rng.sample(versions, INPUTS_PER_RUN):
                runs.record_input(repo, run_id, rec, "observed", 10, 10_000, "mount-1", now=started + 1)
                runs.record_input(repo, run_id, rec, "observed", 100, 10**6, "mount-1", now=started + 5)
            for h in range(HEARTBEATS_PER_RUN):
                runs.heartbeat(repo, run_id, now=started + 10 * (h + 1))
            if rng.random() < 0.95:
                runs.end_run(repo, run_id, "finished" if rng.random() < 0.9 else "failed", now=started + 40)
            if i % 2000 == 1999:
                log(f"  built {i + 1:,} runs")
    finally:
        repo.close()
    return ids, versions


def _ms(values: list[float]) -> tuple[float, float]:
    values = sorted(values)
    return statistics.median(values) * 1000, values[min(len(values) - 1, int(len(values) * 0.95))] * 1000


def _time_each(calls: list[Callable[[], object]]) -> list[float]:
    out = []
    for call in calls:
        t0 = time.perf_counter()
        call()
        out.append(time.perf_counter() - t0)
    return out


def measure(root: str, ids: list[str], versions: list[VersionRecord], rep: int) -> dict[str, dict]:
    """Each query CALLS times on a fresh Repo (fresh cache dir) over the built store."""
    rng = random.Random(rep)
    cache = fresh_dir(root, f"query-{rep}")
    repo = Repo(LocalStore(os.path.join(root, "store")), Places.under(cache))
    try:
        picked = rng.sample(versions, min(CALLS, len(versions)))
        found: list[int] = []
        results = {
            "runs_using": _time_each([lambda r=r: found.append(len(runs.runs_using(repo, r.artifact, r.version)))
                                      for r in picked]),
            "run_info": _time_each([lambda i=i: runs.run_info(repo, i) for i in rng.sample(ids, min(CALLS, len(ids)))]),
            "producing_run": _time_each([lambda r=r: runs.producing_run(repo, repo.version(r.artifact, r.version))
                                         for r in picked]),
            "list_runs(limit=20)": _time_each([lambda: runs.list_runs(repo, limit=20)] * 20),
            "scan: LIST of every run": _time_each([lambda: runs.run_ids(repo)] * 5),
            "mount's poll: LIST artifacts/": _time_each([lambda: sum(1 for _ in repo.store.list(ARTIFACTS))] * 5),
        }
        poll_keys = sum(1 for _ in repo.store.list(ARTIFACTS))
        run_keys_in_poll = sum(1 for k in repo.store.list(ARTIFACTS) if "run" in k.split("/")[2:3])
    finally:
        repo.close()
        remove_tree(cache)
    out = {k: {"seconds": v} for k, v in results.items()}
    out["runs_using"]["mean_found"] = sum(found) / len(found) if found else 0
    out["_poll"] = {"keys": poll_keys, "run_keys": run_keys_in_poll}
    return out


def run(work: str, reps: int, quick: bool, report: dict, n_runs: int | None = None,
        n_versions: int | None = None) -> str:
    n_runs = n_runs or (1_000 if quick else 10_000)
    n_versions = n_versions or (100 if quick else 1_000)
    root = fresh_dir(work, "runs-store")
    log(f"Table 6 (runs): building a directory store with {n_runs:,} runs and {n_versions:,} versions")
    t0 = time.perf_counter()
    ids, versions = build(root, n_runs, n_versions)
    built = time.perf_counter() - t0
    keys = sum(len(files) for _, _, files in os.walk(os.path.join(root, "store")))
    log(f"  built in {built:.0f} s: {keys:,} objects")
    samples: dict[str, list[float]] = {}
    extra: dict = {}
    for rep in range(reps):
        log(f"  r{rep} timing the queries")
        for name, res in measure(root, ids, versions, rep).items():
            if name == "_poll":
                extra["poll"] = res
                continue
            samples.setdefault(name, []).extend(res["seconds"])
            if "mean_found" in res:
                extra["runs_using_found"] = res["mean_found"]
    remove_tree(root)
    rows = []
    for name, values in samples.items():
        med, p95 = _ms(values)
        rows.append([f"`{name}`", fmt_num(med), fmt_num(p95), str(len(values))])
    report["tables"][NAME] = {"runs": n_runs, "versions": n_versions, "objects": keys, "build_s": built,
                              "ms": {k: dict(zip(("median", "p95"), _ms(v), strict=True))
                                     for k, v in samples.items()}, **extra}
    poll = extra.get("poll", {})
    text = "\n".join([
        f"## Table 6 — runs: queries on a store with {n_runs:,} runs and {n_versions:,} versions (issue 10)",
        "",
        md_table(["query", "median ms", "p95 ms", "calls"], rows),
        "",
        f"Notes: a directory store of {keys:,} objects (built in {built:.0f} s without fsync); each run read "
        f"{INPUTS_PER_RUN} versions (two cumulative snapshots each), sent {HEARTBEATS_PER_RUN} heartbeats and "
        f"mostly ended; runs_using found {extra.get('runs_using_found', 0):.1f} runs per version on average. "
        "The queries read what they return (list_runs: the newest day's keys, then 20 runs); the scan, a LIST "
        "of every run, is what they would pay without the reverse index and the per-day keys. "
        f"The mount's poll lists {poll.get('keys', 0):,} keys "
        f"under `artifacts/`, {poll.get('run_keys', 0)} of them about runs.",
        "",
    ])
    print(text, flush=True)
    return text


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.table_runs", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="1,000 runs and 100 versions")
    p.add_argument("--runs", type=int, default=None)
    p.add_argument("--versions", type=int, default=None)
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--workdir", default=None, help="parent of the temp dir (default: $TMPDIR or /tmp)")
    args = p.parse_args(argv)
    work = temp_dir("runs", args.workdir)
    try:
        run(work, args.reps, args.quick, {"tables": {}}, args.runs, args.versions)
    finally:
        remove_tree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
