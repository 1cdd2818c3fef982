"""Repos as the tests' "machines": each its own cache dir over a shared store."""

from __future__ import annotations

import os

from artfs.core.commit import commit_tree
from artfs.core.places import Places
from artfs.core.records import VersionRecord
from artfs.core.repo import Repo
from artfs.storage.open import open_store


def fresh_repo(store_uri: str, cache_dir: str | os.PathLike) -> Repo:
    """A fresh machine: the store at `store_uri`, its own cache and index in `cache_dir`."""
    return Repo(open_store(store_uri), Places.under(str(cache_dir)))


def commit(store_uri: str, src: str | os.PathLike, name: str, cache_dir: str | os.PathLike, message: str = "",
           aliases: tuple[str, ...] = ()) -> VersionRecord:
    """Commit `src` from a "writer machine" (its own cache), so a reader elsewhere starts cold."""
    repo = fresh_repo(store_uri, cache_dir)
    try:
        result = commit_tree(repo, str(src), name, message=message, aliases=aliases)
    finally:
        repo.close()
    assert result.record is not None
    return result.record
