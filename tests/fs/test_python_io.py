"""Python reading a mount the ways training code does: open/seek/read, mmap, numpy.load/memmap, and
several processes at once."""

from __future__ import annotations

import hashlib
import mmap
import random
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.support.trees import BIG


def test_seek_and_read_across_chunks(mount_artfs, animals):
    store, src = animals
    m = mount_artfs(store)
    data = (src / "data" / "big.bin").read_bytes()
    rng = random.Random(7)
    with open(m.path / "animals" / "v0" / "data" / "big.bin", "rb", buffering=0) as f:
        for _ in range(200):
            off = rng.randrange(0, BIG)
            size = rng.choice([1, 4096, 65536, 1 << 20, 3 << 20])
            f.seek(off)
            assert f.read(size) == data[off : off + size], (off, size)
        f.seek(BIG - 10)
        assert f.read(100) == data[-10:]
        f.seek(BIG + 5)
        assert f.read(10) == b""
        f.seek(0)
        assert f.read() == data
    assert (m.path / "animals" / "v0" / "data" / "empty.txt").read_bytes() == b""
    assert (m.path / "animals" / "v0" / "data" / "zeros.bin").read_bytes() == bytes(1 << 20)


def test_mmap_and_numpy(mount_artfs, animals):
    store, src = animals
    m = mount_artfs(store)
    data = m.path / "animals" / "v0" / "data"
    with open(data / "big.bin", "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        expected = (src / "data" / "big.bin").read_bytes()
        assert len(mm) == BIG
        assert mm[BIG // 2 : BIG // 2 + 100_000] == expected[BIG // 2 : BIG // 2 + 100_000]
        assert hashlib.sha256(mm).digest() == hashlib.sha256(expected).digest()
    array = np.load(data / "array.npy")
    assert np.array_equal(array, np.load(src / "data" / "array.npy"))
    loaded = np.load(data / "array.npy", mmap_mode="r")
    assert loaded[999, 99] == 99_999.0
    mapped = np.memmap(data / "big.bin", dtype=np.uint32, mode="r")
    reference = np.fromfile(src / "data" / "big.bin", dtype=np.uint32)
    assert np.array_equal(mapped[::997], reference[::997])
    assert np.array_equal(mapped, reference)


_READER = """
import hashlib, sys
paths = sys.argv[1:]
for p in paths:
    h = hashlib.sha256()
    with open(p, 'rb') as f:
        while block := f.read(1 << 18):
            h.update(block)
    print(h.hexdigest())
"""


def test_four_processes_at_once(mount_artfs, animals):
    """Cold cache: 4 readers of the same and of different files get correct bytes (shared fetches)."""
    store, src = animals
    m = mount_artfs(store)
    version = m.path / "animals" / "v0"
    images = sorted((src / "images").iterdir())
    plans = [
        ["data/big.bin", "data/zeros.bin"],
        ["data/big.bin", "README.md"],
        [f"images/{p.name}" for p in images[::2]] + ["data/big.bin"],
        [f"images/{p.name}" for p in reversed(images)] + ["data/array.npy"],
    ]
    procs = [subprocess.Popen([sys.executable, "-c", _READER, *[str(version / rel) for rel in plan]],
                              stdout=subprocess.PIPE, text=True) for plan in plans]
    for proc, plan in zip(procs, plans, strict=True):
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        expected = [hashlib.sha256((src / rel).read_bytes()).hexdigest() for rel in plan]
        assert out.split() == expected


def test_reads_of_a_version_survive_a_remount_from_the_cache(mount_artfs, animals, tmp_path):
    """A second mount with the same cache directory reads without asking the store for chunks."""
    store, src = animals
    cache = tmp_path / "shared-cache"
    first = mount_artfs(store, cache_dir=cache)
    big = Path("animals/v0/data/big.bin")
    assert (first.path / big).read_bytes() == (src / "data/big.bin").read_bytes()
    first.close()
    second = mount_artfs(store, cache_dir=cache)
    assert (second.path / big).read_bytes() == (src / "data/big.bin").read_bytes()
    assert second.stats()["store_requests"] == 0
