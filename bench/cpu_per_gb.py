"""The mount daemon's CPU per GB read (utime + stime from /proc/PID/stat), for one or more artfs trees.

    python -m bench.cpu_per_gb [--size-mib 384] [--reps 3] [--preads 2000] [TREE ...]

Wall time on a shared, loaded 2-core machine is noisy; the daemon's own CPU per byte is much less so, and
it is what the cold stream is bound by (issue 13). Each TREE (a directory holding an `artfs` package, e.g.
`git archive REV | tar -x -C DIR`; default: this checkout) is run with PYTHONPATH=TREE, in alternating
order, against one moto server (tests/support/s3server.py, streamed ranges), each tree putting the file
into its own prefix. Per repetition and tree:

- cold: a fresh cache, a new mount, page cache dropped, the file read sequentially in 1 MiB reads;
- warm: a new mount on that cache (chunks in LMDB, none in the daemon's memory), page cache dropped;
- preads cold / warm: the same with `--preads` 4 KiB preads at random offsets (CPU per 1,000 ops).

The daemon's CPU is sampled once it has been idle for 0.5 s (after the background index build that the
first request triggers) and again once it is idle after the reads (the cache writer finishes after the
last read). Prints medians as a markdown table.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time

from bench.common import drop_caches, fresh_dir, remove_tree, temp_dir
from tests.support.mounts import start_daemon, stop_daemon
from tests.support.s3server import S3Server, s3_env

MiB = 1 << 20
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def settled_cpu(pid: int, idle: float = 0.5, limit: float = 60) -> float:
    """The process's CPU once it has used (almost) none for `idle` seconds."""
    deadline = time.monotonic() + limit
    last = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(idle)
        now = cpu_seconds(pid)
        if now - last <= 0.02:
            return now
        last = now
    return last


def read_seq(path: str) -> tuple[int, float]:
    buf = bytearray(MiB)
    mv = memoryview(buf)
    n = 0
    t = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while True:
            k = f.readinto(mv)
            if not k:
                break
            n += k
    return n, time.perf_counter() - t


def read_random(path: str, count: int, seed: int) -> float:
    size = os.path.getsize(path)
    rng = random.Random(seed)
    offsets = [rng.randrange(0, size - 4096) for _ in range(count)]
    fd = os.open(path, os.O_RDONLY)
    try:
        t = time.perf_counter()
        for off in offsets:
            if len(os.pread(fd, 4096, off)) != 4096:
                raise RuntimeError(f"short pread at {off}")
        return time.perf_counter() - t
    finally:
        os.close(fd)


class Tree:
    def __init__(self, root: str, env: dict[str, str], name: str) -> None:
        self.root = os.path.abspath(root)
        self.name = name
        self.env = {**env, "PYTHONPATH": self.root}
        self.cmd = [sys.executable, "-m", "artfs"]

    def run(self, *args: str, cache: str) -> None:
        subprocess.run([*self.cmd, *args], env={**self.env, "ARTFS_CACHE": cache}, check=True,
                       capture_output=True, stdin=subprocess.DEVNULL, cwd="/")


def measure(tree: Tree, store: str, rel: str, work: str, cache: str, kind: str, preads: int,
            seed: int, mount_args: tuple[str, ...] = ()) -> tuple[float, float, int]:
    """(daemon CPU s, wall s, bytes or ops) of one read pass on a new mount over `cache`."""
    mnt = fresh_dir(work, "mnt")
    pid = start_daemon(mnt, store, *mount_args, cache_dir=cache, log=os.path.join(work, f"{tree.name}.log"),
                       cmd=tree.cmd, env=tree.env)
    try:
        path = os.path.join(mnt, "cpu", "v0", rel)
        os.stat(path)
        time.sleep(1.0)  # past the quiet time after which the daemon builds the version's index
        drop_caches()
        c0 = settled_cpu(pid)
        if kind == "seq":
            n, wall = read_seq(path)
        else:
            n, wall = preads, read_random(path, preads, seed)
        c1 = settled_cpu(pid)
        return c1 - c0, wall, n
    finally:
        stop_daemon(mnt, pid, cmd=tree.cmd, env=tree.env)
        remove_tree(mnt)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.cpu_per_gb", description=__doc__.split("\n\n")[0])
    p.add_argument("trees", nargs="*", help="artfs trees to compare (default: this checkout)")
    p.add_argument("--size-mib", type=int, default=384)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--preads", type=int, default=2000)
    p.add_argument("--skip", default="", help="comma-separated passes to skip: seq,preads")
    p.add_argument("--cache-size", default=None, help="the mounts' --cache-size (default: artfs's)")
    args = p.parse_args(argv)
    trees_dirs = args.trees or [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
    work = temp_dir("artfs-cpu-")
    s3 = S3Server().start()
    try:
        bucket = s3.create_bucket("cpu")
        env = {**os.environ, **s3_env(s3.endpoint)}
        src = os.path.join(work, "src")
        os.makedirs(src)
        rel = "big.bin"
        with open(os.path.join(src, rel), "wb") as f:
            for _ in range(args.size_mib):
                f.write(os.urandom(MiB))
        trees = [Tree(d, env, f"t{i}") for i, d in enumerate(trees_dirs)]
        stores = {}
        for t in trees:
            stores[t.name] = f"s3://{bucket}/{t.name}"
            t.run("put", src, "cpu", "--store", stores[t.name], cache=fresh_dir(work, "put-cache"))
        remove_tree(src)
        res: dict[tuple[str, str], list[tuple[float, float, int]]] = {}
        skip = set(args.skip.split(","))
        mount_args = ("--cache-size", args.cache_size) if args.cache_size else ()
        for rep in range(args.reps):
            order = trees if rep % 2 == 0 else trees[::-1]
            for t in order:
                for kind in ("seq", "preads"):
                    if kind in skip:
                        continue
                    cache = fresh_dir(work, "cache")
                    for phase in ("cold", "warm"):
                        r = measure(t, stores[t.name], rel, work, cache, kind, args.preads,
                                    1000 * rep + (phase == "warm"), mount_args)
                        res.setdefault((t.name, f"{kind} {phase}"), []).append(r)
                        cpu, wall, n = r
                        per = cpu / (n / 1e9) if kind == "seq" else cpu / n * 1000
                        rate = n / 1e6 / wall if kind == "seq" else n / wall
                        print(f"r{rep} {t.root} {kind} {phase}: cpu {cpu:.2f}s ({per:.2f} per "
                              f"{'GB' if kind == 'seq' else '1k ops'}), {rate:.0f} "
                              f"{'MB/s' if kind == 'seq' else 'ops/s'}", file=sys.stderr, flush=True)
                    remove_tree(cache)
        print("| tree | pass | CPU s per GB / per 1k ops | MB/s / ops/s |")
        print("|---|---|---|---|")
        for t in trees:
            for kind in ("seq cold", "seq warm", "preads cold", "preads warm"):
                rows = res.get((t.name, kind))
                if not rows:
                    continue
                seq = kind.startswith("seq")
                per = statistics.median(c / (n / 1e9) if seq else c / n * 1000 for c, _, n in rows)
                rate = statistics.median(n / 1e6 / w if seq else n / w for _, w, n in rows)
                print(f"| {t.root} | {kind} | {per:.2f} | {rate:.0f} |")
    finally:
        s3.stop()
        remove_tree(work)


if __name__ == "__main__":
    main()
