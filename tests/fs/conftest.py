"""Source trees for the mount tests, with the shapes that trip filesystems up, and committing them."""

from __future__ import annotations

import hashlib
import json
import os
import random
import stat
from pathlib import Path

import numpy as np
import pytest

from artfs.core.commit import commit_tree
from artfs.core.records import VersionRecord
from artfs.core.repo import Repo
from artfs.storage.store import open_store
from tests.conftest import run_artfs

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


# --- staging ---


def tree_of(root: Path) -> dict[str, tuple]:
    """path → (kind, permission bits, content or target) of a directory (on disk or in a mount)."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("symlink", 0o777, os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode), None)
            else:
                with open(full, "rb") as f:
                    out[rel] = ("file", stat.S_IMODE(st.st_mode), f.read())
    return out


def sha256_tree(root: Path) -> dict[str, str]:
    """path → sha256 of every regular file, `-> target` of every symlink, under `root`."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            if os.path.islink(full):
                out[rel] = "-> " + os.readlink(full)
            elif os.path.isfile(full):
                with open(full, "rb") as f:
                    out[rel] = hashlib.file_digest(f, "sha256").hexdigest()
    return out


def seal(staging: Path, *args: str, check: bool = True, env: dict[str, str] | None = None) -> dict:
    """`artfs seal STAGING --json ARGS`: the commit result (or, with check=False, the process)."""
    res = run_artfs("seal", str(staging), "--json", *args, check=check, env=env)
    return json.loads(res.stdout) if check else {"returncode": res.returncode, "stderr": res.stderr}


@pytest.fixture
def small_store(local_store_uri: str, tmp_path: Path) -> tuple[str, Path]:
    """`animals:v0` in a local store: a few files (one of several chunks), a subdirectory, a symlink."""
    src = tmp_path / "small-src"
    (src / "images").mkdir(parents=True)
    (src / "README.md").write_text("# animals\n")
    (src / "images" / "dog.png").write_bytes(random.Random(5).randbytes(3 * MiB))
    (src / "images" / "cat.png").write_bytes(b"cat" * 1000)
    os.symlink("images/cat.png", src / "cover.png")
    commit(local_store_uri, src, "animals", tmp_path / "writer-cache", message="first cut")
    return local_store_uri, src
