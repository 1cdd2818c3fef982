"""Table 4 (issue 10): what capturing a run's inputs costs its reads — small files read through a mount
inside `artfs run` beside the same reads outside any run (target: inside ≥ 0.95× outside).

The store is a local directory holding only the small files (so the figures are the mount's own costs,
not a network's); the side that goes first alternates between repetitions:
- cold: page cache dropped, chunk cache empty (chunks come from the store directory): each side on a fresh
  mount with an empty cache;
- warm: page cache dropped again, chunks in the cache: both sides on the second of those mounts;
- loader: the same, read by 2 worker processes (multiprocessing, fork) taking every other file, the way a
  DataLoader's workers do: inside a run these are separate processes whose tree the mount walks.
Reads run in a child process (bench/probe.py, or the loader script below); inside, that child is CMD of
`artfs run`, and its own timer excludes `artfs run`'s start.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time

from bench.common import (
    REPO,
    CommandFailed,
    Sample,
    drop_caches,
    fmt,
    fmt_num,
    fmt_ratio,
    fresh_dir,
    log,
    md_table,
    ratio,
    remove_tree,
    run_cmd,
    verdict,
)
from bench.data import Dataset
from bench.mounts import Artfs, ArtfsMount, MountUnavailable

NAME = "capture"
SIDES = ("outside", "inside")
METRICS = {"cold": "small files, cold", "warm": "small files, chunk cache warm", "loader": "2-worker loader, warm"}
TARGET = 0.95
TIMEOUT = 1800

LOADER = """
import json, multiprocessing, os, sys, time

def work(d, names):
    mv = memoryview(bytearray(1 << 20))
    n = 0
    for name in names:
        with open(os.path.join(d, name), "rb", buffering=0) as f:
            while f.readinto(mv):
                pass
        n += 1
    return n

if __name__ == "__main__":
    d = sys.argv[1]
    ctx = multiprocessing.get_context("fork")
    t0 = time.perf_counter()
    names = os.listdir(d)
    with ctx.Pool(2) as pool:
        files = sum(pool.starmap(work, [(d, names[0::2]), (d, names[1::2])]))
    print(json.dumps({"seconds": time.perf_counter() - t0, "files": files}))
"""


class CaptureBench:
    def __init__(self, artfs: Artfs, data: Dataset, work: str, reps: int) -> None:
        self.artfs, self.data, self.work, self.reps = artfs, data, work, reps
        self.res = {side: {m: Sample(unit="files/s") for m in METRICS} for side in SIDES}
        self.cpu = {side: {m: Sample(unit="µs") for m in METRICS} for side in SIDES}  # daemon CPU per file
        self.store = os.path.join(work, "capture-store")
        self.loader = os.path.join(work, "capture-loader.py")
        self.recorded: str | None = None
        self.last_run: str | None = None
        self.broken: str | None = None

    def setup(self) -> None:
        for cmd in ("mount", "run"):
            why = self.artfs.has_command(cmd)
            if why:
                self.broken = why
                return
        with open(self.loader, "w") as f:
            f.write(LOADER)
        cache = fresh_dir(self.work, "capture-put-cache")
        try:
            log(f"Table 4 setup: artfs put of the {self.data.small_count:,} small files (local store)")
            self.artfs.put(self.data.small_dir, NAME, self.store, cache)
        finally:
            remove_tree(cache)

    def _read(self, side: str, cache: str, argv: list[str]) -> dict:
        """One timed read in a child process, inside `artfs run` or not; the child's own JSON line."""
        env = {**self.artfs.env_for(cache), "PYTHONPATH": REPO, "ARTFS_STORE": self.store}
        if side == "inside":
            argv = [self.artfs.exe, "run", "--store", self.store, "--", *argv]
        proc = run_cmd(argv, env=env, timeout=TIMEOUT)
        if side == "inside":
            match = re.search(r"run (\S+) ", proc.stderr)
            self.last_run = match.group(1) if match else None
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def rep(self, rep: int) -> None:
        """Cold: each side on its own fresh mount. Warm and loader: both sides, one after the other, on the
        second of those mounts (its chunk cache is warm), so the pairs compare one daemon with itself."""
        sides = SIDES if rep % 2 == 0 else SIDES[::-1]
        for i, side in enumerate(sides):
            cache = fresh_dir(self.work, "capture-cache")
            m = ArtfsMount(self.artfs, fresh_dir(self.work, "capture-mnt"), self.store, cache)
            with m:
                d = os.path.join(m.path, NAME, "v0")
                probe = [sys.executable, "-m", "bench.probe", "small", d]
                self._measure(m, cache, side, "cold", probe)
                if i == len(sides) - 1:
                    for other in sides:
                        self._measure(m, cache, other, "warm", probe)
                        self._measure(m, cache, other, "loader", [sys.executable, self.loader, d])
                    if self.recorded is None:
                        self.recorded = self._recorded(cache)
        log(f"  r{rep}: " + "; ".join(f"{side} " + ", ".join(
            f"{m} {fmt_num(self.res[side][m].values[-1])}" for m in METRICS) for side in SIDES) + " files/s")

    def _measure(self, m: ArtfsMount, cache: str, side: str, metric: str, argv: list[str]) -> None:
        drop_caches()
        cpu = _cpu_seconds(m.pid)
        r = self._read(side, cache, argv)
        cpu = _cpu_seconds(m.pid) - cpu
        if r["files"] != self.data.small_count:
            raise RuntimeError(f"{metric} read {r['files']} files of {self.data.small_count}")
        self.res[side][metric].values.append(r["files"] / r["seconds"])
        self.cpu[side][metric].values.append(cpu / r["files"] * 1e6)

    def _recorded(self, cache: str) -> str:
        """What the store says the last run read (the mount writes its final counts within ~1 s)."""
        env = {**self.artfs.env_for(cache), "ARTFS_STORE": self.store}
        deadline = time.monotonic() + 15
        text = "nothing"
        while time.monotonic() < deadline and self.last_run:
            info = json.loads(run_cmd([self.artfs.exe, "runs", "show", self.last_run, "--json"], env=env).stdout)
            inputs = info.get("inputs") or []
            if inputs:
                text = ", ".join(f"{i.get('artifact')}:v{i.get('version')} ({i.get('files')} files, "
                                 f"{i.get('bytes', 0) / (1 << 20):.0f} MiB)" for i in inputs)
                if all(i.get("files") == self.data.small_count for i in inputs):
                    break
            time.sleep(0.5)
        return text

    def table(self) -> str:
        if self.broken:
            return f"n/a: {self.broken}"
        rows = []
        for metric, label in METRICS.items():
            out, inside = self.res["outside"][metric], self.res["inside"][metric]
            r = ratio(inside.value, out.value)
            rows.append([label, fmt(out), fmt(inside), fmt_ratio(r), verdict(None if r is None else r >= TARGET),
                         fmt(self.cpu["outside"][metric]), fmt(self.cpu["inside"][metric])])
        return md_table(["read", "outside any run", "inside `artfs run`", "inside ÷ outside", f"≥ {TARGET}×",
                         "daemon CPU per file, outside", "inside"], rows)


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU the mount daemon has used (its figure is steadier than wall time on a busy box)."""
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14, 15


def run(artfs: Artfs, data: Dataset, work: str, reps: int, report: dict) -> str:
    bench = CaptureBench(artfs, data, work, reps)
    try:
        bench.setup()
        for rep in range(reps):
            if bench.broken:
                break
            bench.rep(rep)
    except (MountUnavailable, CommandFailed) as e:
        bench.broken = getattr(e, "reason", None) or str(e)
        log(f"  capture: n/a ({bench.broken})")
    report["tables"]["capture"] = {
        side: {m: s.as_json() for m, s in metrics.items()} for side, metrics in bench.res.items()
    } | {"daemon_cpu_us_per_file": {side: {m: s.as_json() for m, s in metrics.items()}
                                    for side, metrics in bench.cpu.items()},
         "recorded": bench.recorded, "error": bench.broken}
    text = "\n".join([
        "## Table 4 — capture: reads inside `artfs run` beside the same reads outside (issue 10)",
        "",
        bench.table(),
        "",
        f"Notes: {data.small_count:,} files of 4–64 KiB in one version of a local-directory store; cold: a "
        "fresh mount and empty cache per side; warm and loader: both sides on one mount; the side that goes "
        "first alternates; the page cache is dropped before every read. Inside, each open is attributed to "
        "the run through the process tree (a 2 µs read of a /proc file held open per thread, the tree walked "
        "once per thread) and counted; "
        "outside, with no run registered, an open costs one stat. The daemon's CPU per file (user + system, "
        "from /proc) is steadier than wall time on a busy machine. The run recorded as its input: "
        f"{bench.recorded or 'n/a'}.",
        "",
    ])
    print(text, flush=True)
    return text
