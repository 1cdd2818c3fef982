"""Where artfs keeps things on this machine, and which of them may be deleted.

    <cache>/                                   DISPOSABLE: `rm -rf` loses nothing (all of it is refetched)
        chunks.lmdb/                           the LMDB chunk cache (storage/cache.py), shared by processes
        stores/<store tag>/index.lmdb/         per-store index: version records, manifests' trees, chunks
        stores/<store tag>/manifests/          manifests as fetched from the store
        stores/<store tag>/copies/             versions downloaded by the Python API (artfs/tracking.py)
        (temporary files)                      manifests being written by a commit or a seal
    <data>/                                    NOT disposable
        store/                                 the embedded default store (a directory store)
        staging/<store tag>/<artifact>/        staged, unsealed changes (core/staging/layout.py)
    <state>/logs/mount-<name>-<hash>.log       one log per mount point
    <state>/run/<hash>.sock                    a mount daemon's control socket (or under <runtime>)
    <state>/runs/<pid>-<start>.json            the active runs on this machine (or under <runtime>)

The roots come from the settings (artfs/settings.py: $ARTFS_CACHE, $ARTFS_DATA, $XDG_*), read once at the
edge; nothing below reads the environment. Staged data used to live under `<cache>/stores/<tag>/staging`,
where `rm -rf ~/.cache/artfs` deleted it: `staging_root` moves it to `<data>` the first time it is asked.
`artfs cache info|prune|clear` (cli/cache.py) reports and drops the disposable part (`store_caches`).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
from dataclasses import dataclass

from artfs.errors import ArtfsError

SUN_PATH_MAX = 107  # sockaddr_un.sun_path holds 108 bytes, NUL included


def store_tag(store_uri: str) -> str:
    """A store's directory name on this machine: a hash of its URI."""
    return hashlib.sha256(store_uri.encode()).hexdigest()[:16]


def _mount_tag(mountpoint: str) -> str:
    return hashlib.sha256(os.path.abspath(mountpoint).encode()).hexdigest()


@dataclass(frozen=True)
class StoreCache:
    """One store's part of the cache: `uri` ("" if unknown), its directory, index, manifests and copies."""

    uri: str
    path: str
    index: str
    manifests: str
    copies: str


@dataclass(frozen=True)
class Places:
    """The local roots (absolute paths). `runtime` is $XDG_RUNTIME_DIR/artfs, or "" when there is none."""

    cache: str
    data: str
    state: str
    runtime: str = ""

    @classmethod
    def under(cls, root: str) -> Places:
        """All roots inside one directory (tests, throwaway repos): cache/, data/, state/."""
        root = os.path.abspath(root)
        return cls(os.path.join(root, "cache"), os.path.join(root, "data"), os.path.join(root, "state"))

    # --- disposable -------------------------------------------------------------------------------

    def store_cache(self, store_uri: str) -> str:
        """The per-store part of the cache: its index and fetched manifests."""
        return os.path.join(self.cache, "stores", store_tag(store_uri))

    def client_data(self) -> str:
        """Start-up data of store clients (a trimmed copy of botocore's endpoint table), shared by all stores."""
        return os.path.join(self.cache, "client")

    def store_index(self, store_uri: str) -> str:
        return os.path.join(self.store_cache(store_uri), "index.lmdb")

    def manifests(self, store_uri: str) -> str:
        return os.path.join(self.store_cache(store_uri), "manifests")

    def version_copy(self, store_uri: str, name: str, version: int, digest: str) -> str:
        """A version's files exported for `ArtifactVersion.path()/download()` when no mount serves it. Named
        with the digest too: a copy is never mistaken for another version that got the same number."""
        return os.path.join(self.store_cache(store_uri), "copies", name, f"v{version}-{digest[:12]}")

    def store_caches(self) -> list[StoreCache]:
        """The per-store parts of the cache on this machine, one per store used from here (`artfs cache`)."""
        root = os.path.join(self.cache, "stores")
        try:
            tags = sorted(os.listdir(root))
        except OSError:
            return []
        found = []
        for tag in tags:
            path = os.path.join(root, tag)
            if not os.path.isdir(path):
                continue
            try:
                with open(os.path.join(path, "store-uri")) as f:  # written by the index (core/index.py)
                    uri = f.read().strip()
            except OSError:
                uri = ""
            found.append(StoreCache(uri, path, os.path.join(path, "index.lmdb"), os.path.join(path, "manifests"),
                                    os.path.join(path, "copies")))
        return found

    # --- kept -------------------------------------------------------------------------------------

    def default_store(self) -> str:
        return os.path.join(self.data, "store")

    def staging_root(self, store_uri: str) -> str:
        """The directory of the staging areas of one store, one subdirectory per artifact. Staged data
        found in the old place (inside the cache) is moved here first, not lost."""
        new = os.path.join(self.data, "staging", store_tag(store_uri))
        old = os.path.join(self.store_cache(store_uri), "staging")
        if os.path.isdir(old):
            _move_staging(old, new)
        return new

    # --- this machine's processes -----------------------------------------------------------------

    def mount_log(self, mountpoint: str) -> str:
        """`<state>/logs/mount-<name>-<hash>.log`: one log per mount point."""
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in os.path.basename(os.path.abspath(mountpoint)))
        return os.path.join(self.state, "logs", f"mount-{name or 'root'}-{_mount_tag(mountpoint)[:8]}.log")

    @property
    def runs_registry(self) -> str:
        """The machine-local registry of active runs (core/run_registry.py): <runtime>/runs, else
        <state>/runs. Entries name live processes, so a tmpfs that a reboot empties is the right home."""
        return os.path.join(self.runtime or self.state, "runs")

    def control_socket(self, mountpoint: str) -> str:
        """A mount daemon's control socket, in the first of <runtime>, <state>/run, /tmp/artfs-<uid> where
        the path fits a unix socket address. Clients find it through the staging directory's xattr."""
        name = f"{_mount_tag(mountpoint)[:16]}.sock"
        bases = [self.runtime] if self.runtime else []
        bases += [os.path.join(self.state, "run"), f"/tmp/artfs-{os.getuid()}"]
        for base in bases:
            path = os.path.join(base, name)
            if os.path.isabs(path) and len(path.encode()) <= SUN_PATH_MAX:
                return path
        raise ArtfsError(f"no place for the control socket: {self.state} is too long a path")


def _move_staging(old: str, new: str) -> None:
    """Move each artifact's staging area from `old` to `new` (a rename when both are on one filesystem, else
    a copy that is renamed into place, then the old one removed). An area already at `new` wins: it is the
    newer one (the move was done before, and a copy of the old one was left by a crash)."""
    os.makedirs(new, mode=0o700, exist_ok=True)
    for name in os.listdir(old):
        src, dst = os.path.join(old, name), os.path.join(new, name)
        _check_not_in_use(src)
        if os.path.exists(dst):
            shutil.rmtree(src, ignore_errors=True)
            continue
        try:
            os.rename(src, dst)
        except OSError:  # another filesystem: copy beside, then rename into place (never half an area)
            part = os.path.join(new, f".{name}.moving")
            shutil.rmtree(part, ignore_errors=True)
            shutil.copytree(src, part, symlinks=True)
            os.rename(part, dst)
            shutil.rmtree(src, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)


def _check_not_in_use(area: str) -> None:
    """An area still owned by a running process (an older artfs) must not move under it."""
    try:
        fd = os.open(os.path.join(area, "lock"), os.O_RDWR)
    except OSError:
        return  # no lock file: nobody owns it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise ArtfsError(
            f"the staging area {area} is in use by another process (an older artfs mount?): unmount it, "
            "then try again (staged data moves out of the cache directory on first use)"
        ) from None
    finally:
        os.close(fd)  # releases the flock
