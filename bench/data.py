"""The benchmark's data, generated once per run from a seed: random (incompressible) bytes.

    ROOT/big/big.bin          one big file (512 MiB; 64 MiB with --quick)
    ROOT/small/f00000.bin …   many small files of 4–64 KiB (5,000; 625 with --quick), one directory
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

from bench.common import MiB, log

SEED = 20240611


@dataclass(frozen=True)
class Scale:
    big_bytes: int
    small_files: int
    preads: int
    many_files: int  # files in the version used for time-to-first-byte

    @classmethod
    def of(cls, quick: bool) -> Scale:
        full = cls(big_bytes=512 * MiB, small_files=5000, preads=2000, many_files=100_000)
        if not quick:
            return full
        return cls(full.big_bytes // 8, full.small_files // 8, full.preads // 8, full.many_files // 8)


@dataclass(frozen=True)
class Dataset:
    root: str
    big: str  # the big file
    small_dir: str
    small_names: list[str]
    small_bytes: int
    big_bytes: int

    @property
    def big_dir(self) -> str:
        return os.path.dirname(self.big)

    @property
    def total_bytes(self) -> int:
        return self.big_bytes + self.small_bytes

    @property
    def small_count(self) -> int:
        return len(self.small_names)


def make_dataset(root: str, scale: Scale) -> Dataset:
    rng = random.Random(SEED)
    big_dir = os.path.join(root, "big")
    small_dir = os.path.join(root, "small")
    os.makedirs(big_dir)
    os.makedirs(small_dir)
    big = os.path.join(big_dir, "big.bin")
    log(f"generating data in {root}: {scale.big_bytes // MiB} MiB file + {scale.small_files:,} small files")
    with open(big, "wb") as f:
        left = scale.big_bytes
        while left:
            n = min(left, 4 * MiB)
            f.write(rng.randbytes(n))
            left -= n
    names, total = [], 0
    for i in range(scale.small_files):
        size = rng.randint(4 * 1024, 64 * 1024)
        name = f"f{i:05d}.bin"
        with open(os.path.join(small_dir, name), "wb") as f:
            f.write(rng.randbytes(size))
        names.append(name)
        total += size
    os.sync()
    return Dataset(root, big, small_dir, names, total, scale.big_bytes)


def make_many_files(root: str, count: int) -> str:
    """`count` tiny files in directories of 1,000 (for time to first byte); returns one path in the middle."""
    rng = random.Random(SEED + 1)
    per_dir = 1000
    middle = ""
    for i in range(count):
        d = os.path.join(root, f"d{i // per_dir:03d}")
        if i % per_dir == 0:
            os.makedirs(d)
        path = os.path.join(d, f"f{i:06d}.txt")
        with open(path, "wb") as f:
            f.write(rng.randbytes(rng.randint(64, 512)))
        if i == count // 2:
            middle = os.path.relpath(path, root)
    return middle


def flip_byte(path: str, offset: int) -> None:
    """Invert one byte in place (calling it twice restores the file)."""
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))
