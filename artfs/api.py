"""The Python API: what the CLI does, for training code and notebooks, on the same core.

    import artfs.api as artfs
    artfs.put("out/", "resnet", type="model", aliases=["candidate"])
    rec = artfs.resolve("resnet:best")
    artfs.delete("resnet:v3");  artfs.restore("resnet:v3");  artfs.set_ttl("resnet:v4", "30d")
    artfs.get("animals:v3", "/tmp/animals")
    artfs.seal("/mnt/art/resnet/staging", message="epoch 10", aliases=["best"])  # through the mount's daemon
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from artfs.core import lifecycle
from artfs.core.commit import CommitResult, commit_tree
from artfs.core.export import ExportResult, export_version
from artfs.core.names import parse_ref
from artfs.core.records import VersionRecord
from artfs.core.repo import Repo
from artfs.settings import Settings
from artfs.staging_client import request_discard, request_seal, request_status

# staging directories of a mount, through its daemon (see artfs/staging_client.py)
seal = request_seal
status = request_status
discard = request_discard


@contextlib.contextmanager
def open_repo(store: str | None = None, endpoint_url: str | None = None, create: bool = False) -> Iterator[Repo]:
    """A Repo on `store` (default: $ARTFS_STORE, else the embedded default), closed afterwards; a store that
    is not there is an error unless `create`."""
    repo = Settings.from_env().open_repo(store, endpoint_url, create=create)
    try:
        yield repo
    finally:
        repo.close()


def put(src: str, name: str, *, type: str | None = None, message: str = "",  # noqa: A002 - the CLI's word
        aliases: list[str] | tuple[str, ...] = (), metadata: dict[str, str] | None = None,
        store: str | None = None, ttl: float | str | None = None) -> CommitResult:
    """Commit directory `src` as the next version of `name` (nothing new if it equals latest). `ttl`
    (seconds, or "30d"): the version is deleted that long after its creation."""
    seconds = lifecycle.parse_ttl(ttl)
    with open_repo(store, create=True) as repo:
        return commit_tree(repo, src, name, type, message, metadata, aliases, ttl=seconds)


def get(ref: str, dest: str | None = None, *, store: str | None = None) -> ExportResult:
    """Export version `ref` (NAME[:vN|latest|ALIAS]) to `dest` (default ./NAME-vN)."""
    with open_repo(store) as repo:
        rec = repo.resolve(parse_ref(ref))
        return export_version(repo, rec, dest or f"{rec.artifact}-v{rec.version}")


def resolve(ref: str, *, store: str | None = None) -> VersionRecord:
    with open_repo(store) as repo:
        return repo.resolve(parse_ref(ref))


def versions(name: str, *, store: str | None = None) -> list[VersionRecord]:
    """The versions of `name`, oldest first; deleted ones are not among them (core/lifecycle.py)."""
    with open_repo(store) as repo:
        return [repo.version(name, n) for n in repo.require_artifact(name)]


def delete(ref: str, delete_aliases: bool = False, *, store: str | None = None) -> lifecycle.DeleteResult:
    """Soft-delete version `ref` (NAME:REF): restorable with `restore` for the store's retention window.
    Refused while a user alias points at it, unless `delete_aliases` (which deletes those aliases)."""
    with open_repo(store) as repo:
        return lifecycle.delete(repo, ref, delete_aliases=delete_aliases)


def restore(ref: str, *, store: str | None = None) -> VersionRecord:
    """Bring back deleted version `ref` (NAME:vN) within the retention window."""
    with open_repo(store) as repo:
        return lifecycle.restore(repo, ref)


def set_ttl(ref: str, ttl: float | str | None, *, store: str | None = None) -> float | None:
    """Delete version `ref` `ttl` (seconds, or "30d") after its creation; None removes its TTL. Returns
    when it expires (None: never)."""
    with open_repo(store) as repo:
        return lifecycle.set_ttl(repo, ref, ttl)[1]


def set_alias(ref: str, alias: str, *, store: str | None = None) -> VersionRecord:
    """Point `alias` at version `ref`; returns that version."""
    with open_repo(store) as repo:
        rec = repo.resolve(parse_ref(ref))
        repo.set_alias(rec.artifact, alias, rec.version)
        return rec
