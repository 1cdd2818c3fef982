"""Huge versions through a mount: first byte, `find` cold/warm, daemon RSS and CPU (issue 13's scale rows).

    python -m bench.table_huge [--files 200000] [--ttfb-files 100000] [--reps 3] [--workdir DIR] [--keep]

A directory store with one version of `--files` tiny files (and one of `--ttfb-files`, for the first-byte
row), in folders of 1,000 (bench/data.py's make_many_files). Every repetition mounts with an empty cache
dir, so "cold" means a version never opened on this machine: the first byte waits for nothing but one
manifest block, and `find` runs while the version's index builds in the background. Figures are medians;
the daemon's CPU time (utime + stime from /proc) is printed beside wall time, being far less noisy than it
on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from bench.common import log, probe, temp_dir
from bench.data import make_many_files
from tests.support.mounts import start_daemon, stop_daemon

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14 and 15)


def rss_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, RssAnon) in MiB: the index's LMDB pages count in VmRSS as file pages, not in RssAnon."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon"):
                out[key] = int(value.split()[0]) / 1024
    return out["VmRSS"], out["RssAnon"]


def drop_caches() -> None:
    """The page cache (the store's files), when allowed: cold means cold on disk too."""
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        pass


def read_all(root: str) -> int:
    n = 0
    for d, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(d, name), "rb", buffering=0) as f:
                f.read()
            n += 1
    return n


class Daemon:
    def __init__(self, work: str, store: str, tag: str) -> None:
        self.mnt = os.path.join(work, f"mnt-{tag}")
        self.cache = os.path.join(work, f"cache-{tag}")
        shutil.rmtree(self.cache, ignore_errors=True)
        os.makedirs(self.mnt, exist_ok=True)
        os.makedirs(self.cache)
        env = {**os.environ, "ARTFS_CACHE": self.cache}
        self.env = env
        self.pid = start_daemon(self.mnt, store, cache_dir=self.cache, log=os.path.join(self.cache, "mount.log"),
                                env=env)

    def close(self) -> None:
        stop_daemon(self.mnt, self.pid, env=self.env)
        shutil.rmtree(self.cache, ignore_errors=True)


def settle(pid: int, timeout: float = 60.0) -> None:
    """Wait until the daemon is idle (its background index build done): "warm" is the steady state."""
    deadline = time.monotonic() + timeout
    last, idle = cpu_seconds(pid), 0
    while time.monotonic() < deadline and idle < 4:  # idle for over a second: past the build's wait too
        time.sleep(0.3)
        now = cpu_seconds(pid)
        idle = idle + 1 if now - last < 0.02 else 0
        last = now


def timed(pid: int, fn: Callable[[], object]) -> tuple[float, float]:
    c0, t0 = cpu_seconds(pid), time.perf_counter()
    fn()
    return time.perf_counter() - t0, cpu_seconds(pid) - c0


def main(argv: list[str]) -> dict[str, float]:
    """Run the table; returns the medians by row name (find_cold_s, ttfb_ms, rss_find_mib, ...)."""
    p = argparse.ArgumentParser(prog="python -m bench.table_huge", description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=200_000)
    p.add_argument("--ttfb-files", type=int, default=100_000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--workdir", default=None)
    p.add_argument("--store", default=None, help="reuse a store made by an earlier run (with --keep)")
    p.add_argument("--keep", action="store_true", help="keep the work dir (and its store) for another run")
    p.add_argument("--read-all", action="store_true", help="also read every file, then the RSS again")
    args = p.parse_args(argv)
    work = args.workdir or temp_dir("huge")
    os.makedirs(work, exist_ok=True)
    store = args.store or os.path.join(work, "store")
    sizes = sorted({args.files, args.ttfb_files})
    middles: dict[int, str] = {}
    for n in sizes:
        marker = os.path.join(store, f".bench-h{n}")
        if os.path.exists(marker):
            with open(marker) as f:
                middles[n] = f.read().strip()
            continue
        src = os.path.join(work, f"src{n}")
        shutil.rmtree(src, ignore_errors=True)
        log(f"making {n:,} files")
        middles[n] = make_many_files(src, n)
        cache = os.path.join(work, "put-cache")
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "artfs", "put", src, f"h{n}", "--store", store], check=True,
                       env={**os.environ, "ARTFS_CACHE": cache}, stdout=subprocess.DEVNULL)
        log(f"  put {n:,}: {time.perf_counter() - t0:.1f}s")
        shutil.rmtree(src)
        with open(marker, "w") as f:
            f.write(middles[n] + "\n")

    rows: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        rows.setdefault(key, []).append(value)

    for rep in range(args.reps):
        n = args.ttfb_files
        drop_caches()
        d = Daemon(work, store, "ttfb")
        try:
            path = os.path.join(d.mnt, f"h{n}", "v0", middles[n])
            c0 = cpu_seconds(d.pid)
            r = probe("ttfb", path, timeout=120)
            add("ttfb_ms", r["seconds"] * 1000)
            add("ttfb_cpu_ms", (cpu_seconds(d.pid) - c0) * 1000)
        finally:
            d.close()
        n = args.files
        drop_caches()
        d = Daemon(work, store, "find")
        try:
            root = os.path.join(d.mnt, f"h{n}", "v0")
            for phase in ("cold", "warm"):
                if phase == "warm":
                    settle(d.pid)
                out: list[dict] = []
                wall, cpu = timed(d.pid, lambda out=out, root=root: out.append(probe("find", root, timeout=600)))
                if out[0]["files"] != n:
                    raise SystemExit(f"find listed {out[0]['files']} files, expected {n}")
                add(f"find_{phase}_s", out[0]["seconds"])
                add(f"find_{phase}_cpu_s", cpu)
            rss, anon = rss_mib(d.pid)
            add("rss_find_mib", rss)
            add("anon_find_mib", anon)
            if args.read_all:
                out2: list[int] = []
                wall, cpu = timed(d.pid, lambda out2=out2, root=root: out2.append(read_all(root)))
                add("read_all_s", wall)
                add("read_all_cpu_s", cpu)
                rss, anon = rss_mib(d.pid)
                add("rss_read_mib", rss)
                add("anon_read_mib", anon)
        finally:
            d.close()
        log(f"rep {rep}: " + ", ".join(f"{k} {v[-1]:.3g}" for k, v in rows.items()))
    print(f"| huge versions ({args.files:,} files; first byte in {args.ttfb_files:,}) | median | runs |")
    print("|---|---|---|")
    for k, v in rows.items():
        print(f"| {k} | {statistics.median(v):.3g} | {' '.join(f'{x:.3g}' for x in v)} |")
    if not args.keep and args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return {k: statistics.median(v) for k, v in rows.items()}


if __name__ == "__main__":
    main(sys.argv[1:])
