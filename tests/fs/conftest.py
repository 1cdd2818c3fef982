"""Source trees for the mount tests, with the shapes that trip filesystems up, and committing them."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

from artfs.core.commit import commit_tree
from artfs.core.records import VersionRecord
from artfs.core.repo import Repo
from artfs.storage.store import open_store

MiB = 1 << 20
BIG = 10 * MiB  # ~10 content-defined chunks: reads cross chunk boundaries
SMALL_FILES = 120


def write_dataset(root: Path, seed: int = 1234) -> Path:
    """A tree of big, empty, compressible, tiny, nested, oddly named, executable files and symlinks."""
    rng = random.Random(seed)
    files: dict[str, bytes] = {
        "README.md": b"# animals\nA dataset for the mount tests.\n",
        "data/big.bin": rng.randbytes(BIG),
        "data/zeros.bin": bytes(MiB),
        "data/empty.txt": b"",
        "nested/a/b/c/deep.txt": b"deep\n",
        "with space.txt": b"spaces\n",
        "ünïcode-名前.txt": "ünïcode\n".encode(),
        "run.sh": b"#!/bin/sh\necho hi\n",
    }
    for i in range(SMALL_FILES):
        files[f"images/img_{i:03d}.bin"] = rng.randbytes(rng.randint(1, 24 * 1024))
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    np.save(root / "data/array.npy", np.arange(100_000, dtype=np.float64).reshape(1000, 100))
    os.chmod(root / "run.sh", 0o755)
    os.symlink("data/big.bin", root / "link-to-big")
    os.symlink("../../README.md", root / "nested/a/up")
    for dirpath, _, names in os.walk(root, topdown=False):  # fixed mtimes, children before parents
        for name in names:
            os.utime(os.path.join(dirpath, name), ns=(1_600_000_000 * 10**9,) * 2, follow_symlinks=False)
        os.utime(dirpath, ns=(1_600_000_000 * 10**9,) * 2)
    return root


def commit(store_uri: str, src: Path, name: str, cache_dir: Path, message: str = "",
           aliases: tuple[str, ...] = ()) -> VersionRecord:
    """Commit `src` from a "writer machine" (its own cache), so the mount starts cold."""
    repo = Repo(open_store(store_uri), cache_dir=str(cache_dir))
    try:
        result = commit_tree(repo, str(src), name, message=message, aliases=aliases)
    finally:
        repo.close()
    assert result.record is not None
    return result.record


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "src")


@pytest.fixture
def animals(store_uri: str, dataset: Path, tmp_path: Path) -> tuple[str, Path]:
    """`animals:v0` = `dataset`, in the store under test: (store_uri, source dir)."""
    commit(store_uri, dataset, "animals", tmp_path / "writer-cache", message="first cut")
    return store_uri, dataset
