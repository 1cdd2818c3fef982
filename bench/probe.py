"""Timed reads of a filesystem, run in a child process so a hung mount can be killed (SIGKILL ends a
process blocked in a FUSE request) without taking the benchmark down. Prints one JSON object.

    python -m bench.probe seq FILE               {"seconds", "bytes"}   1 MiB reads, start to end
    python -m bench.probe small DIR              {"seconds", "files", "bytes"}  directory order
    python -m bench.probe find DIR               {"seconds", "files"}   `find DIR -type f`
    python -m bench.probe preads FILE N SEED     {"seconds", "ops", "first_ms", "p50_ms", "p99_ms"}  N random
                                                 4 KiB-aligned preads (latencies: the first one, median, p99)
    python -m bench.probe ttfb FILE              {"seconds"}            open + first byte
    python -m bench.probe write SRC DST          {"seconds", "bytes"}   1 MiB writes + close, no fsync
    python -m bench.probe cp SRCDIR DSTDIR       {"seconds"}            `cp -r`
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time

MiB = 1 << 20
PAGE = 4096


def _read_all(path: str, mv: memoryview) -> int:
    total = 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(mv):
            total += n
    return total


def seq(path: str) -> dict:
    mv = memoryview(bytearray(MiB))
    t0 = time.perf_counter()
    n = _read_all(path, mv)
    return {"seconds": time.perf_counter() - t0, "bytes": n}


def small(d: str) -> dict:
    """What a dataset loader does: list the directory, then read each file whole, in that order."""
    mv = memoryview(bytearray(MiB))
    t0 = time.perf_counter()
    names = os.listdir(d)
    total = sum(_read_all(os.path.join(d, name), mv) for name in names)
    return {"seconds": time.perf_counter() - t0, "files": len(names), "bytes": total}


def find(d: str) -> dict:
    t0 = time.perf_counter()
    out = subprocess.run(["find", d, "-type", "f"], capture_output=True, check=True).stdout
    return {"seconds": time.perf_counter() - t0, "files": out.count(b"\n")}


def pread_offsets(size: int, count: int, seed: int) -> list[int]:
    """Page-aligned offsets, uniform over the file; the same for every system given the same seed."""
    rng = random.Random(seed)
    return [rng.randrange(0, (size - PAGE) // PAGE + 1) * PAGE for _ in range(count)]


def preads(path: str, count: str, seed: str) -> dict:
    offsets = pread_offsets(os.path.getsize(path), int(count), int(seed))
    fd = os.open(path, os.O_RDONLY)
    lat = []
    clock = time.perf_counter
    try:
        t0 = clock()
        for off in offsets:
            a = clock()
            if len(os.pread(fd, PAGE, off)) != PAGE:
                raise SystemExit(f"short pread at {off}")
            lat.append(clock() - a)
        seconds = clock() - t0
    finally:
        os.close(fd)
    first = lat[0] if lat else 0.0
    return {"seconds": seconds, "ops": len(offsets), "first_ms": first * 1000, "p50_ms": percentile_ms(lat, 50),
            "p99_ms": percentile_ms(lat, 99)}


def percentile_ms(seconds: list[float], p: int) -> float:
    """The p-th percentile (nearest rank) of latencies in seconds, in ms (0 for none)."""
    lat = sorted(seconds) or [0.0]
    return lat[min(len(lat) - 1, len(lat) * p // 100)] * 1000


def ttfb(path: str) -> dict:
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        first = f.read(1)
    if len(first) != 1:
        raise SystemExit(f"{path}: empty")
    return {"seconds": time.perf_counter() - t0}


def write(src: str, dst: str) -> dict:
    mv = memoryview(bytearray(MiB))
    with open(src, "rb", buffering=0) as fi:  # the source is read ahead of the clock: only writes are timed
        chunks = []
        while n := fi.readinto(mv):
            chunks.append(bytes(mv[:n]))
    t0 = time.perf_counter()
    total = 0
    with open(dst, "wb", buffering=0) as fo:
        for c in chunks:
            total += fo.write(c)
    return {"seconds": time.perf_counter() - t0, "bytes": total}


def cp(src: str, dst: str) -> dict:
    t0 = time.perf_counter()
    subprocess.run(["cp", "-r", src, dst], check=True, capture_output=True)
    return {"seconds": time.perf_counter() - t0}


MODES = {"seq": seq, "small": small, "find": find, "preads": preads, "ttfb": ttfb, "write": write, "cp": cp}

if __name__ == "__main__":
    print(json.dumps(MODES[sys.argv[1]](*sys.argv[2:])))
