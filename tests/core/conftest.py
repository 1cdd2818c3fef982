import os

import pytest

from artfs.core.repo import Repo
from artfs.storage.store import open_store


@pytest.fixture
def repo(store_uri, tmp_path):
    r = Repo(open_store(store_uri), cache_dir=str(tmp_path / "cache"))
    yield r
    r.close()


def fresh_repo(store_uri: str, cache_dir: str | os.PathLike) -> Repo:
    """A second machine: same store, its own cache and index."""
    return Repo(open_store(store_uri), cache_dir=str(cache_dir))
