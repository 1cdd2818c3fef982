"""Table 4 (issue 10): what capturing a run's inputs costs its reads — small files read through a mount
inside `artfs run` beside the same reads outside any run (target: inside ≥ 0.95× outside).

The store is a local directory holding only the small files (so the figures are the mount's own costs,
not a network's); every repetition, for each side in turn (the order alternates), gets a fresh mount with
an empty cache:
- cold: page cache dropped, chunk cache empty (chunks come from the store directory);
- warm: page cache dropped again, chunks now in the cache;
- loader: page cache dropped, 2 worker processes (multiprocessing, fork) reading every other file, the way
  a DataLoader's workers do: inside a run these are separate processes whose tree the mount walks.
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
        sides = SIDES if rep % 2 == 0 else SIDES[::-1]
        for side in sides:
            cache = fresh_dir(self.work, "capture-cache")
            m = ArtfsMount(self.artfs, fresh_dir(self.work, "capture-mnt"), self.store, cache)
            with m:
                d = os.path.join(m.path, NAME, "v0")
                for metric, argv in (("cold", [sys.executable, "-m", "bench.probe", "small", d]),
                                     ("warm", [sys.executable, "-m", "bench.probe", "small", d]),
                                     ("loader", [sys.executable, self.loader, d])):
                    drop_caches()
                    r = self._read(side, cache, argv)
                    if r["files"] != self.data.small_count:
                        raise RuntimeError(f"{metric} read {r['files']} files of {self.data.small_count}")
                    self.res[side][metric].values.append(r["files"] / r["seconds"])
                if side == "inside" and self.recorded is None:
                    self.recorded = self._recorded(cache)
            log(f"  r{rep} {side}: " + ", ".join(
                f"{m} {fmt_num(self.res[side][m].values[-1])} files/s" for m in METRICS))

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
            rows.append([label, fmt(out), fmt(inside), fmt_ratio(r), verdict(None if r is None else r >= TARGET)])
        return md_table(["read", "outside any run", "inside `artfs run`", "inside ÷ outside",
                         f"≥ {TARGET}×"], rows)


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
    } | {"recorded": bench.recorded, "error": bench.broken}
    text = "\n".join([
        "## Table 4 — capture: reads inside `artfs run` beside the same reads outside (issue 10)",
        "",
        bench.table(),
        "",
        f"Notes: {data.small_count:,} files of 4–64 KiB in one version of a local-directory store; a fresh "
        "mount and empty cache per side and repetition (the side that goes first alternates); the page cache "
        "is dropped before every read. Inside, each open is attributed to the run through the process tree "
        "(one /proc read per open, the tree walked once per process) and counted; outside, with no run "
        f"registered, an open costs one stat. The run recorded as its input: {bench.recorded or 'n/a'}.",
        "",
    ])
    print(text, flush=True)
    return text
