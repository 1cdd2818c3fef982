"""Table (gc, issue 12): `artfs gc` over a directory store of 1,000 versions and 100,000 chunks.

The store: 10 artifacts × 100 versions, each version 100 new small files (one chunk each, so 100,000
chunks in 1,000 packs), plus orphan packs of failed commits; then every other version is deleted and the
clock is moved past the retention window. gc runs in a child process with a fresh cache (cold: every
kept manifest is fetched once) and the time injected: cycle 1 condemns the unreferenced packs, cycle 2
(a margin later) deletes them; cycle 3 runs with --compact (nothing left to rewrite: the cost of reading
every kept version's chunk list). Per cycle: wall time, store requests by kind (LIST counted as S3 would bill
it: one per 1,000 keys), peak RSS of the process. The target: requests proportional to packs, not chunks.

    python -m bench.table_gc measure STORE CACHE   (what the child runs; prints JSON)
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator

from bench.common import CLEANUP, REPO, fresh_dir, log, md_table

ARTIFACTS = 10
VERSIONS_PER_ARTIFACT = 100
FILES_PER_VERSION = 100
MARGIN = 3600.0
ORPHANS = 5


def build_store(store: str, cache: str, quick: bool) -> dict:
    """The store described in the module docstring; returns its counts."""
    from artfs.core import lifecycle
    from artfs.core.commit import Committer, commit_tree
    from artfs.core.gc_guard import set_margin
    from artfs.core.places import Places
    from artfs.core.repo import Repo
    from artfs.storage.open import open_store

    per = VERSIONS_PER_ARTIFACT // 8 if quick else VERSIONS_PER_ARTIFACT
    repo = Repo(open_store(store), Places.under(cache))
    rnd = random.Random(12)
    src = os.path.join(cache, "src")
    os.makedirs(src, exist_ok=True)
    versions = chunks = 0
    try:
        set_margin(repo.store, MARGIN, immediate=True)
        for a in range(ARTIFACTS):
            for _ in range(per):
                for f in range(FILES_PER_VERSION):
                    with open(os.path.join(src, f"f{f:03d}"), "wb") as out:
                        out.write(rnd.randbytes(rnd.randint(64, 512)))
                res = commit_tree(repo, src, f"art{a}")
                versions += 1
                chunks += res.new_chunks
            for v in range(0, per, 2):
                lifecycle.delete(repo, f"art{a}:v{v}")
        for _ in range(ORPHANS):  # failed commits: packs uploaded, never claimed
            orphan = os.path.join(src, "orphan")
            with open(orphan, "wb") as out:
                out.write(rnd.randbytes(4096))
            c = Committer(repo, "art0")
            c.add_file("orphan", orphan, 0o644, 0, 4096)
            c.build()
            c.close()
    finally:
        repo.close()
    return {"versions": versions, "chunks": chunks}


def _counting_store(inner):  # noqa: ANN001, ANN202 - built inside the child, after artfs is importable
    from artfs.storage.store import WrappingStore

    class Counting(WrappingStore):
        """Counts requests by kind; a LIST of n keys counts as S3 bills it (one request per 1,000 keys)."""

        def __init__(self, inner) -> None:  # noqa: ANN001
            super().__init__(inner)
            self.counts: Counter[str] = Counter()
            self._lock = threading.Lock()

        def _count(self, kind: str, n: int = 1) -> None:
            with self._lock:
                self.counts[kind] += n

        def get(self, key):  # noqa: ANN001, ANN202
            self._count("GET")
            return super().get(key)

        def get_range(self, key, offset, length):  # noqa: ANN001, ANN202
            self._count("GET")
            return super().get_range(key, offset, length)

        def put(self, key, data):  # noqa: ANN001, ANN202
            self._count("PUT")
            return super().put(key, data)

        def create_if_absent(self, key, data):  # noqa: ANN001, ANN202
            self._count("PUT")
            return super().create_if_absent(key, data)

        def delete(self, key):  # noqa: ANN001, ANN202
            self._count("DELETE")
            return super().delete(key)

        def _listed(self, items: list) -> Iterator:
            self._count("LIST", 1 + len(items) // 1000)
            return iter(items)

        def list(self, prefix):  # noqa: ANN001, ANN202
            return self._listed(list(super().list(prefix)))

        def list_info(self, prefix):  # noqa: ANN001, ANN202
            return self._listed(list(super().list_info(prefix)))

    return Counting(inner)


def measure(store: str, cache: str) -> dict:
    """Two gc cycles (condemn, then delete a margin later), timed and counted (runs in the child)."""
    from artfs.core.gc import collect
    from artfs.core.places import Places
    from artfs.core.repo import Repo
    from artfs.storage.open import open_store

    counting = _counting_store(open_store(store))
    repo = Repo(counting, Places.under(cache))
    offset = [repo.retention_window() + MARGIN + 60]
    cycles = []
    try:
        for compact in (False, False, True):
            counting.counts.clear()
            t0 = time.perf_counter()
            r = collect(repo, clock=lambda: time.time() + offset[0], compact=compact)
            seconds = time.perf_counter() - t0
            cycles.append({"seconds": seconds, "requests": dict(counting.counts),
                           "total_requests": sum(counting.counts.values()), "report": r.as_json(),
                           "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
            offset[0] += MARGIN + 60
    finally:
        repo.close()
    return {"cycles": cycles}


def run(work: str, reps: int, quick: bool, report: dict) -> str:
    root = fresh_dir(work, "gc")
    # Built in memory where there is /dev/shm (the build is 1,000 commits, each fsyncing): gc then runs on
    # a copy on disk (copytree keeps mtimes, which gc ages packs by).
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    build_root = tempfile.mkdtemp(prefix="artfs-bench-gc-", dir=shm or root)
    CLEANUP.push("gc build store", lambda: shutil.rmtree(build_root, ignore_errors=True))
    store, build_cache = os.path.join(build_root, "store"), os.path.join(build_root, "cache")
    log("Table gc: building the store (1,000 versions, 100,000 chunks)" + (" — quick: 1/8" if quick else ""))
    t0 = time.perf_counter()
    built = build_store(store, build_cache, quick)
    built["build_seconds"] = time.perf_counter() - t0
    shutil.rmtree(build_cache, ignore_errors=True)
    runs = []
    for rep in range(reps):
        log(f"Table gc: gc cycles, repetition {rep + 1}")
        shutil.rmtree(os.path.join(root, "gc-store"), ignore_errors=True)
        shutil.copytree(store, os.path.join(root, "gc-store"))  # each repetition collects the same store
        proc = subprocess.run(
            [sys.executable, "-m", "bench.table_gc", "measure", os.path.join(root, "gc-store"),
             os.path.join(root, f"gc-cache-{rep}")],
            env={**os.environ, "PYTHONPATH": REPO}, capture_output=True, text=True, timeout=3600, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"gc measurement failed: {proc.stderr.strip().splitlines()[-1:]}")
        runs.append(json.loads(proc.stdout))
    best = min(runs, key=lambda r: sum(c["seconds"] for c in r["cycles"]))
    report["tables"]["gc"] = {"store": built, "runs": runs}
    rows = []
    names = ("1: condemn", "2: delete (a margin later)", "3: `--compact` (reads every kept chunk list)")
    for name, c in zip(names, best["cycles"], strict=True):
        rq = c["requests"]
        rep_ = c["report"]
        rows.append([name, f"{c['seconds']:.2f}", str(c["total_requests"]),
                     " ".join(f"{k} {rq[k]}" for k in sorted(rq)),
                     f"{rep_['condemned_packs']} / {rep_['deleted_packs']} ({rep_['freed_bytes'] / 1e6:.1f} MB)",
                     f"{c['peak_rss_mib']:.0f}"])
    text = "\n".join([
        f"## Table — gc: `artfs gc` over {built['versions']:,} versions / {built['chunks']:,} chunks (issue 12)",
        "",
        md_table(["cycle", "seconds", "requests", "by kind", "condemned / deleted packs", "peak RSS MiB"], rows),
        "",
        f"Directory store; half the versions deleted and past their retention window, {ORPHANS} orphan packs of "
        f"failed commits; building it (in /dev/shm where there is one) took {built['build_seconds']:.0f} s. "
        "gc runs in a fresh process "
        "with a fresh cache (every kept manifest fetched once, only its header read); LIST requests count one "
        f"per 1,000 keys as on S3; best of {reps}.",
        "",
    ])
    print(text, flush=True)
    return text


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "measure":
        print(json.dumps(measure(sys.argv[2], sys.argv[3])))
    else:
        sys.exit(__doc__)
