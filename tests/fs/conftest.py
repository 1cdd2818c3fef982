"""Fixtures of the mount tests: source trees with the shapes that trip filesystems up, committed."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.support.repos import commit
from tests.support.trees import MiB, write_dataset


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "src")


@pytest.fixture
def animals(store_uri: str, dataset: Path, tmp_path: Path) -> tuple[str, Path]:
    """`animals:v0` = `dataset`, in the store under test: (store_uri, source dir)."""
    commit(store_uri, dataset, "animals", tmp_path / "writer-cache", message="first cut")
    return store_uri, dataset


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
