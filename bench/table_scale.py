"""Scale curves (issue 13): how each cost grows with the work, three small tables of 3–4 points each.

    python -m bench.table_scale [--quick] [--full] [--reps N] [--only files|versions|readers] [--workdir DIR]
    scripts/bench --only scale [--scale-full]          (the same, in the whole benchmark's run)

1. files: one version of 10k, 100k (and with --full or ARTFS_BENCH_FULL=1, 1M) tiny files in folders of
   1,000 (bench/data.py's make_many_files), on a directory store: `artfs put` (wall, CPU, the process's
   peak RSS from os.wait4), mount start, `find` cold, the daemon's RSS after it, first byte (cold).
2. versions: one artifact of 10, 100, 1,000 small versions (built through the core in /dev/shm, copied to
   disk): the CPU of committing one more version, `artfs ls NAME` cold and warm, mount start, and the
   daemon's CPU per catalog poll.
3. readers: 1, 4, 8 concurrent `cat`s, each of its own 64 MiB file (16 MiB with --quick) of one version on
   the moto S3 store, through a fresh mount with an empty cache: aggregate MB/s.

Every mount starts with an empty cache dir after the page cache is dropped. Under each table, the growth
exponent k of cost ∝ n^k between successive points: about 1 is linear, 0 constant, above 1.2 superlinear
(a finding, named in the line). Figures are medians of --reps.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator

from bench.common import CLEANUP, MB, MiB, Sample, drop_caches, fmt, fresh_dir, log, md_table, probe, remove_tree
from bench.data import make_many_files
from bench.mounts import Artfs, ArtfsMount
from bench.s3peer import S3
from bench.table_huge import cpu_seconds, rss_mib, settle
from tests.support.processes import stop_pid

CURVES = ("files", "versions", "readers")
FILE_POINTS = (10_000, 100_000)
FULL_POINT = 1_000_000  # behind --full / ARTFS_BENCH_FULL=1: making and putting it takes many minutes
VERSION_POINTS = (10, 100, 1_000)
READER_POINTS = (1, 4, 8)
POLL = 0.1  # seconds between the daemon's catalog polls while its poll cost is measured
POLL_WINDOW = 2.0  # seconds of daemon CPU per poll measurement
SUPERLINEAR = 1.2  # a growth exponent above this (noise allowed for) is a finding
SEED = 20261213


def full_requested(flag: bool) -> bool:
    """The 1M-file point: asked for on the command line or by ARTFS_BENCH_FULL=1."""
    return flag or os.environ.get("ARTFS_BENCH_FULL", "") not in ("", "0")


# --- measuring ---


def run_child(argv: list[str], env: dict[str, str], timeout: float = 3600) -> tuple[float, float, float]:
    """(wall s, CPU s, peak RSS MiB) of one child process, from os.wait4's rusage of that child alone (the
    RUSAGE_CHILDREN maximum would be the biggest child's so far, not this one's)."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        handle = CLEANUP.push(f"{' '.join(argv[:2])} (pid {proc.pid})", lambda: stop_pid(proc.pid))
        try:
            deadline = time.monotonic() + timeout
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    wall = time.perf_counter() - t0
                    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{' '.join(argv[:3])}… did not finish within {timeout:.0f}s")
                time.sleep(0.005)
        finally:
            CLEANUP.release(handle)
        if proc.returncode != 0:
            err.seek(0)
            lines = [ln for ln in err.read().decode(errors="replace").splitlines() if ln.strip()]
            raise RuntimeError(f"{' '.join(argv[:3])}… failed: {lines[-1] if lines else proc.returncode}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


@contextlib.contextmanager
def mounted(artfs: Artfs, root: str, store: str, *args: str) -> Iterator[tuple[str, int, float]]:
    """A fresh mount (empty cache, page cache dropped first): (its path, the daemon's pid, the seconds
    `artfs mount --daemon` took to be ready: CLI start, the catalog's first scan, a round trip through
    the kernel). Unmounted on leaving, or by the run's cleanup on Ctrl-C."""
    drop_caches()
    m = ArtfsMount(artfs, fresh_dir(root, "mnt"), store, fresh_dir(root, "mount-cache"), *args)
    t0 = time.perf_counter()
    with m:
        started = time.perf_counter() - t0
        assert m.pid is not None
        yield m.path, m.pid, started


def exponents(xs: list[int], ys: list[float | None]) -> list[float | None]:
    """k in y ∝ x^k between successive points (None where a value is missing or not positive)."""
    out: list[float | None] = []
    for (x0, y0), (x1, y1) in zip(zip(xs, ys, strict=True), zip(xs[1:], ys[1:], strict=True), strict=False):
        out.append(math.log(y1 / y0) / math.log(x1 / x0) if y0 and y1 and y0 > 0 and y1 > 0 else None)
    return out


def growth_line(xs: list[int], costs: dict[str, list[float | None]], unit: str) -> tuple[str, list[str]]:
    """One line under a table: each cost's growth exponents, and which grow superlinearly."""
    parts, found = [], []
    for label, ys in costs.items():
        ks = exponents(xs, ys)
        parts.append(f"{label} " + ", ".join("n/a" if k is None else f"{k:.2f}" for k in ks))
        bad = [(x0, x1, k) for x0, x1, k in zip(xs, xs[1:], ks, strict=False) if k is not None and k > SUPERLINEAR]
        found += [f"{label} (k = {k:.2f} from {x0:,} to {x1:,} {unit})" for x0, x1, k in bad]
    verdict = ("**superlinear: " + "; ".join(found) + "**") if found else "all linear or better"
    return f"Growth exponent k (cost ∝ n^k) between successive points: {'; '.join(parts)} — {verdict}.", found


# --- curve 1: files per version ---


def curve_files(artfs: Artfs, root: str, points: list[int], reps: int) -> tuple[str, dict]:
    keys = ("put_s", "put_cpu_s", "put_rss_mib", "mount_s", "find_s", "find_cpu_s", "build_cpu_s", "rss_mib",
            "anon_mib", "ttfb_ms")
    res: dict[int, dict[str, Sample]] = {}
    for n in points:
        s = res[n] = {k: Sample() for k in keys}
        src = tempfile.mkdtemp(prefix="artfs-bench-scale-src-", dir=source_parent(root, n))
        handle = CLEANUP.push(f"rm {src}", lambda src=src: remove_tree(src))
        log(f"Scale (files): making {n:,} files in {src}")
        middle = make_many_files(src, n)
        store = os.path.join(root, "files-store")
        for rep in range(reps):  # each repetition puts into a new store; the last one is mounted
            remove_tree(store)
            cache = fresh_dir(root, "put-cache")
            drop_caches()
            wall, cpu, rss = run_child([artfs.exe, "put", src, "many", "--store", store, "--json"],
                                       artfs.env_for(cache))
            s["put_s"].values.append(wall)
            s["put_cpu_s"].values.append(cpu)
            s["put_rss_mib"].values.append(rss)
            log(f"  put of {n:,} files, rep {rep + 1}: {wall:.1f} s, {cpu:.1f} s CPU, peak RSS {rss:.0f} MiB")
        CLEANUP.release(handle)  # the source: gone before the mounts are measured
        remove_tree(os.path.join(root, "put-cache"))
        version = os.path.join("many", "v0")
        for _ in range(reps):
            with mounted(artfs, root, store) as (path, _pid, _started):
                first = probe("ttfb", os.path.join(path, version, middle), timeout=120)
                s["ttfb_ms"].values.append(first["seconds"] * 1000)
            with mounted(artfs, root, store) as (path, pid, started):
                c0 = cpu_seconds(pid)
                r = probe("find", os.path.join(path, version), timeout=1800)
                if r["files"] != n:
                    raise RuntimeError(f"find listed {r['files']:,} files, expected {n:,}")
                s["find_cpu_s"].values.append(cpu_seconds(pid) - c0)
                s["mount_s"].values.append(started)
                s["find_s"].values.append(r["seconds"])
                rss, anon = rss_mib(pid)
                settle(pid)  # the rest of the index build `find` started (its CPU: the column after find's)
                s["build_cpu_s"].values.append(cpu_seconds(pid) - c0)
                s["rss_mib"].values.append(rss)
                s["anon_mib"].values.append(anon)
        log(f"  {n:,} files: " + ", ".join(f"{k} {fmt(v)}" for k, v in s.items()))
    remove_tree(os.path.join(root, "files-store"))
    rows = [[f"{n:,}", fmt(s["put_s"]), fmt(s["put_cpu_s"]), fmt(s["put_rss_mib"]), fmt(s["mount_s"]),
             fmt(s["find_s"]), fmt(s["find_cpu_s"]), fmt(s["build_cpu_s"]),
             f"{fmt(s['rss_mib'])} / {fmt(s['anon_mib'])}", fmt(s["ttfb_ms"])] for n, s in res.items()]
    costs = {"put": [res[n]["put_s"].value for n in points],
             "put CPU": [res[n]["put_cpu_s"].value for n in points],
             "put RSS": [res[n]["put_rss_mib"].value for n in points],
             "find": [res[n]["find_s"].value for n in points],
             "find CPU": [res[n]["find_cpu_s"].value for n in points],
             "find + index build CPU": [res[n]["build_cpu_s"].value for n in points],
             "daemon RSS": [res[n]["rss_mib"].value for n in points],
             "first byte": [res[n]["ttfb_ms"].value for n in points]}
    line, found = growth_line(points, costs, "files")
    rss_top = res[points[-1]]["rss_mib"].value
    target = (f"Daemon RSS after `find` at {points[-1]:,} files: {fmt_mib(rss_top)} (target ≤ 300 MB at 1M files"
              + ("" if points[-1] >= FULL_POINT else "; the 1M point runs with --scale-full or ARTFS_BENCH_FULL=1")
              + ").")
    text = "\n".join([
        "### Files per version (directory store)",
        "",
        md_table(["files", "`artfs put` s", "put CPU s", "put peak RSS MiB", "mount start s", "`find` cold s",
                  "daemon CPU in `find` s", "… + the index build, settled",
                  "daemon RSS after `find` MiB (all / anon)", "first byte, cold ms"], rows),
        "",
        line,
        target,
        "`put`: the source in /dev/shm where it has room (making, reading and removing a million small files on a "
        "shared disk is mostly waiting on the disk, which is not artfs's work), a new store on disk each repetition, "
        "a fresh cache, the page cache dropped first; peak RSS is the process's own (os.wait4). Mount start: "
        "`artfs mount --daemon` until the mount answers. `find` and first byte: each on its own fresh mount "
        "(`MNT/many/v0`); the daemon's RSS is VmRSS / RssAnon (the index's LMDB pages count as file pages). A cold "
        "`find` runs while the version's index builds in the background: its CPU holds the part of the build that "
        "overlaps it, a larger share the larger the version, so it may grow faster than the files; the column "
        "after it (find + the whole build, the daemon left to settle) is the cost the version really has.",
    ])
    data = {str(n): {k: v.as_json() for k, v in s.items()} for n, s in res.items()}
    data["superlinear"] = found
    return text, data


def source_parent(root: str, files: int) -> str:
    """/dev/shm when it has room for `files` tiny files (a page and an inode each) and 1 GiB to spare,
    else the work dir."""
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return root
    room = st.f_bavail * st.f_frsize > files * 8192 + (1 << 30) and st.f_favail > files + files // 10 + 1000
    return "/dev/shm" if room else root


def fmt_mib(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.0f} MiB"


# --- curve 2: versions per artifact ---


def build_versions(repo, src: str, start: int, stop: int, timed_last: int = 5) -> tuple[list[float], list[int]]:  # noqa: ANN001
    """Versions start..stop-1 of artifact `many` in `repo` (a core Repo over a ListCounter), one small file
    each, committed as `artfs put` commits them; for each of the last `timed_last` commits, its CPU
    milliseconds (this process is otherwise idle, and CPU is far less noisy than wall time on a shared
    machine) and the keys of the artifact it listed (a LIST of n versions: O(n) work, on S3 n/1,000
    requests)."""
    from artfs.core.commit import commit_tree

    times, listed = [], []
    for i in range(start, stop):
        with open(os.path.join(src, "version.txt"), "w") as f:
            f.write(f"version {i}\n")
        before = repo.store.listed
        t0 = time.process_time()
        commit_tree(repo, src, "many")
        if i >= stop - timed_last:
            times.append((time.process_time() - t0) * 1000)
            listed.append(repo.store.listed - before)
    return times, listed


def list_counter(inner):  # noqa: ANN001, ANN201
    """`inner` (a Store), counting the keys listed under `artifacts/` (what grows with the versions)."""
    from artfs.storage.store import WrappingStore

    class ListCounter(WrappingStore):
        listed = 0

        def list(self, prefix: str) -> Iterator[str]:
            for key in self.inner.list(prefix):
                if key.startswith("artifacts/"):
                    self.listed += 1
                yield key

    return ListCounter(inner)


def curve_versions(artfs: Artfs, root: str, points: list[int], reps: int) -> tuple[str, dict]:
    from artfs.core.places import Places
    from artfs.core.repo import Repo
    from artfs.storage.open import open_store

    # 1,000 commits each fsync: built in memory where there is /dev/shm, measured on a copy on disk.
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    build_root = tempfile.mkdtemp(prefix="artfs-bench-scale-", dir=shm or root)
    CLEANUP.push("scale build store", lambda: shutil.rmtree(build_root, ignore_errors=True))
    src = os.path.join(build_root, "src")
    os.makedirs(src)
    repo = Repo(list_counter(open_store(os.path.join(build_root, "store"))),
                Places.under(os.path.join(build_root, "cache")))
    keys = ("commit_ms", "commit_listed", "ls_cold_s", "ls_warm_s", "ls_cpu_s", "mount_s", "poll_ms")
    res: dict[int, dict[str, Sample]] = {}
    made = 0
    try:
        for n in points:
            t0 = time.perf_counter()
            s = res[n] = {k: Sample() for k in keys}
            times, listed = build_versions(repo, src, made, n)
            s["commit_ms"].values += times
            s["commit_listed"].values += [float(k) for k in listed]
            log(f"Scale (versions): {n:,} versions (+{n - made:,} in {time.perf_counter() - t0:.1f} s)")
            made = n
            store = os.path.join(root, "versions-store")
            remove_tree(store)
            shutil.copytree(os.path.join(build_root, "store"), store)
            for _ in range(reps):
                cache = fresh_dir(root, "ls-cache")
                drop_caches()
                wall, cpu, _rss = run_child([artfs.exe, "ls", "many", "--store", store], artfs.env_for(cache))
                s["ls_cold_s"].values.append(wall)
                s["ls_cpu_s"].values.append(cpu)
                wall, _cpu, _rss = run_child([artfs.exe, "ls", "many", "--store", store], artfs.env_for(cache))
                s["ls_warm_s"].values.append(wall)
                with mounted(artfs, root, store, "--poll", f"{POLL * 1000:.0f}ms") as (_path, pid, started):
                    s["mount_s"].values.append(started)
                    s["poll_ms"].values.append(poll_cost(pid) * 1000)
            log(f"  {n:,} versions: " + ", ".join(f"{k} {fmt(v)}" for k, v in s.items()))
    finally:
        repo.close()
    remove_tree(os.path.join(root, "versions-store"))
    rows = [[f"{n:,}", *(fmt(s[k]) for k in keys)] for n, s in res.items()]
    costs = {"put of one more version": [res[n]["commit_ms"].value for n in points],
             "ls cold": [res[n]["ls_cold_s"].value for n in points],
             "ls warm": [res[n]["ls_warm_s"].value for n in points],
             "mount start": [res[n]["mount_s"].value for n in points],
             "poll": [res[n]["poll_ms"].value for n in points]}
    line, found = growth_line(points, costs, "versions")
    text = "\n".join([
        "### Versions per artifact (directory store, one small file per version)",
        "",
        md_table(["versions", "put of one more version: CPU ms (core, in process)",
                  "… keys of the artifact it listed", "`artfs ls NAME` cold s", "warm s",
                  "cold: CPU s", "mount start s", "daemon CPU per poll ms"], rows),
        "",
        line,
        "A put lists its artifact's records once (core/commit.py: the type check, the dedup source and the "
        "claim share that listing), so the keys it lists grow with the versions, its other work does not. "
        f"Cold `ls`: a new cache dir; warm: the same command again. Poll: the daemon's CPU over {POLL_WINDOW:g} s "
        f"with `--poll {POLL * 1000:.0f}ms` and nothing changing, divided by the polls in that time (the window "
        f"less the CPU, over the interval: a poll's scan is CPU on a directory store).",
    ])
    data = {str(n): {k: v.as_json() for k, v in s.items()} for n, s in res.items()}
    data["superlinear"] = found
    return text, data


def poll_cost(pid: int) -> float:
    """CPU seconds of one catalog poll of an idle daemon (see the note under the table)."""
    time.sleep(2 * POLL)  # past the mount's own start-up work
    c0, t0 = cpu_seconds(pid), time.perf_counter()
    time.sleep(POLL_WINDOW)
    cpu, wall = cpu_seconds(pid) - c0, time.perf_counter() - t0
    polls = max(1.0, (wall - cpu) / POLL)  # each cycle: sleep POLL, then scan (≈ its CPU)
    return cpu / polls


# --- curve 3: concurrent readers ---


def curve_readers(artfs: Artfs, s3: S3 | None, root: str, points: list[int], reps: int,
                  quick: bool) -> tuple[str, dict]:
    if s3 is None:  # run alone: a server of its own, and the CLI pointed at it
        s3 = S3(os.path.join(root, "moto.log"))
        artfs = Artfs(s3.env)
    size = (16 if quick else 64) * MiB
    count = max(points)
    src = fresh_dir(root, "readers-src")
    rng = random.Random(SEED)
    for i in range(count):
        with open(os.path.join(src, f"r{i}.bin"), "wb") as f:
            for _ in range(size // (4 * MiB)):
                f.write(rng.randbytes(4 * MiB))
    store = s3.uri("scale-readers")
    log(f"Scale (readers): artfs put of {count} files of {size // MiB} MiB to moto S3")
    artfs.put(src, "readers", store, fresh_dir(root, "put-cache"))
    remove_tree(src)
    remove_tree(os.path.join(root, "put-cache"))
    keys = ("wall_s", "mbps", "cpu_s", "whole_files", "fetched_ratio")
    res: dict[int, dict[str, Sample]] = {}
    for k in points:
        s = res[k] = {key: Sample() for key in keys}
        for _ in range(reps):
            with mounted(artfs, root, store) as (path, pid, _started):
                paths = [os.path.join(path, "readers", "v0", f"r{i}.bin") for i in range(k)]
                c0 = cpu_seconds(pid)
                wall = concurrent_cats(paths)
                s["cpu_s"].values.append(cpu_seconds(pid) - c0)
                stats = json.loads(os.getxattr(path, "user.artfs.stats"))  # the daemon's counters (fs/ops.py)
                s["whole_files"].values.append(stats.get("whole_files", 0))
                s["fetched_ratio"].values.append(stats.get("store_bytes", 0) / max(1, stats.get("read_bytes", 0)))
                s["wall_s"].values.append(wall)
                s["mbps"].values.append(k * size / MB / wall)
        log(f"  {k} reader(s): " + ", ".join(f"{key} {fmt(v)}" for key, v in s.items()))
    one = res[points[0]]["mbps"].value
    rows = []
    for k, s in res.items():
        mbps, cpu = s["mbps"].value, s["cpu_s"].value
        per_gb = None if cpu is None else cpu / (k * size / 1e9)
        rows.append([str(k), f"{k * size // MiB:,}", fmt(s["wall_s"]), fmt(s["mbps"]),
                     "n/a" if mbps is None or not one else f"{mbps / one:.2f}×",
                     "n/a" if per_gb is None else f"{per_gb:.2f}",
                     " ".join(f"{v:.0f}" for v in s["whole_files"].values), fmt(s["fetched_ratio"])])
    top = res[points[-1]]["mbps"].value
    found = []
    if one and top is not None and top < 0.8 * one:
        found.append(f"aggregate MB/s falls from {one:.0f} (1 reader) to {top:.0f} ({points[-1]} readers)")
    speedup = "n/a" if not one or top is None else f"{top / one:.2f}×"
    verdict = ("**superlinear cost: " + "; ".join(found) + "**") if found else "no loss with more readers"
    text = "\n".join([
        f"### Concurrent readers, each `cat` of its own {size // MiB} MiB file (moto S3, cold)",
        "",
        md_table(["readers", "MiB read", "wall s", "aggregate MB/s", "÷ 1 reader", "daemon CPU s per GB",
                  "files taken for random, per run", "bytes fetched ÷ read"], rows),
        "",
        f"Aggregate MB/s at {points[-1]} readers is {speedup} that of one reader on {os.cpu_count()} cores "
        f"(linear would be {points[-1]}× where there are cores and server to spare) — {verdict}. The moto server "
        "and the readers share the machine with the daemon. 'Taken for random': files the reader's sequential "
        "detector (fs/reader.py, RANDOM_SEEKS far seeks) judged random and fetched whole into the disk cache "
        "(the daemon's `whole_files`); with several readers the kernel's readahead requests of one file can "
        "arrive out of order, which the detector counts as seeks.",
    ])
    data: dict = {str(k): {key: v.as_json() for key, v in s.items()} for k, s in res.items()}
    data["superlinear"] = found
    data["file_bytes"] = size
    return text, data


def concurrent_cats(paths: list[str], timeout: float = 600) -> float:
    """Seconds from starting one `cat PATH > /dev/null` per path, all at once, until the last one ends."""
    procs: list[subprocess.Popen] = []
    t0 = time.perf_counter()
    try:
        for p in paths:
            procs.append(subprocess.Popen(["cat", p], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE))
        for proc in procs:
            _, err = proc.communicate(timeout=max(1.0, timeout - (time.perf_counter() - t0)))
            if proc.returncode != 0:
                raise RuntimeError(f"cat failed: {err.decode(errors='replace').strip()[:200]}")
        return time.perf_counter() - t0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


# --- the table ---


def run(artfs: Artfs, s3: S3 | None, work: str, reps: int, quick: bool, full: bool, report: dict,
        curves: tuple[str, ...] = CURVES) -> str:
    """The three curves (each one failing alone prints as failed); the markdown, also printed."""
    root = fresh_dir(work, "scale")
    full = full_requested(full)
    points = [*FILE_POINTS, FULL_POINT] if full else list(FILE_POINTS)
    jobs: dict[str, Callable[[], tuple[str, dict]]] = {
        "files": lambda: curve_files(artfs, root, points, reps),
        "versions": lambda: curve_versions(artfs, root, list(VERSION_POINTS), reps),
        "readers": lambda: curve_readers(artfs, s3, root, list(READER_POINTS), reps, quick),
    }
    out = report["tables"].setdefault("scale", {})
    parts = ["## Table — scale curves: how cost grows with the work (issue 13)", ""]
    for name in curves:
        t0 = time.perf_counter()
        try:
            text, data = jobs[name]()
        except Exception as e:  # one broken curve must not cost the others
            import traceback

            log(f"scale curve {name} failed: {traceback.format_exc()}")
            text, data = f"### {name} — failed: {type(e).__name__}: {e}", {"error": f"{type(e).__name__}: {e}"}
        data["seconds"] = time.perf_counter() - t0
        out[name] = data
        log(f"Scale ({name}): {data['seconds']:.0f} s")
        parts += [text, ""]
    parts.append(f"Medians of {reps} repetition(s); every mount starts with an empty cache dir after the page "
                 "cache is dropped; CPU figures are user + system seconds from /proc or the child's rusage.")
    text = "\n".join(parts) + "\n"
    print(text, flush=True)
    return text


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.table_scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="16 MiB files for the readers; 1 repetition")
    p.add_argument("--full", action="store_true", help=f"add the {FULL_POINT:,}-file point (or ARTFS_BENCH_FULL=1)")
    p.add_argument("--reps", type=int, default=None, help="repetitions per figure (default 3; 1 with --quick)")
    p.add_argument("--only", choices=CURVES, action="append", help="run this curve (may repeat)")
    p.add_argument("--workdir", default=None, help="parent of the temp dir (default: $TMPDIR or /tmp)")
    args = p.parse_args(argv)
    reps = args.reps or (1 if args.quick else 3)
    from bench.common import install_signal_handlers, temp_dir

    install_signal_handlers()
    try:
        work = temp_dir("scale", args.workdir)
        run(Artfs(dict(os.environ)), None, work, reps, args.quick, args.full, {"tables": {}},
            tuple(args.only or CURVES))
    finally:
        CLEANUP.run_all()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
