"""Repos as the tests' "machines": each its own cache dir over a shared store."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from artfs.core.commit import commit_tree
from artfs.core.manifest import Entry
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


@contextlib.contextmanager
def reading_machine(src: str | os.PathLike, work: str | os.PathLike, name: str = "ds") -> Iterator[Repo]:
    """`src` committed as `name` into a store under `work` by one machine; a fresh one reading it (cold)."""
    store = os.path.join(work, "store")
    commit(store, src, name, os.path.join(work, "writer"))
    repo = fresh_repo(store, os.path.join(work, "reader"))
    try:
        yield repo
    finally:
        repo.close()


def indexed_entry(repo: Repo, ref: str, path: str) -> tuple[VersionRecord, Any, Entry]:
    """A version's record, its manifest header (packs) and the entry at `path`, its index built."""
    rec = repo.resolve(ref)
    header = repo.ensure_index(rec)
    entry = repo.index.lookup(rec.manifest, path)
    assert entry is not None, path
    return rec, header, entry
