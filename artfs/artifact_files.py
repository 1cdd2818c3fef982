"""An artifact's files on the way in and out, for the tracking API (artfs/tracking.py).

In: `Artifact` is a version being put together. Its `TreeSpec` collects what add_file, add_dir and new_file
name — a path in the version → a local file, directory or symlink — checked as it is added (names,
collisions), and `commit_spec` feeds it to a Committer in manifest order, so nothing is copied: files are
read once, from where they are, as `artfs put` reads a directory (a file that changes while it is read
fails the commit; nothing is published).

Out: a version's directory in a running mount of the same store (`mounted_version`: the kernel's mount
table, then the mount root's `user.artfs.store` and the version directory's `user.artfs.digest`), else a
local copy (`local_copy`) exported once into the disposable cache, or into a directory the caller names.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
import time
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any, Protocol

from artfs.core.commit import CommitResult, Committer, walk_tree
from artfs.core.export import export_version
from artfs.core.lifecycle import parse_ttl
from artfs.core.manifest import path_key
from artfs.core.names import check_alias, check_message, check_name, check_path, check_symlink_target
from artfs.core.records import VersionRecord
from artfs.core.references import Source as ExternalSource
from artfs.core.references import expand
from artfs.core.repo import Repo
from artfs.core.run_registry import canonical_store_uri
from artfs.errors import ArtfsError, InvalidName

FILE, DIR, LINK, REF = "file", "dir", "symlink", "reference"


@dataclass(frozen=True)
class Source:
    """Where one path of the version comes from: a local file (followed if it was given as a symlink by
    `add_file`), a local directory (its mode and mtime; None: a parent made up for a name like "cfg/x"), or
    a symlink's target (found in an added directory), or an external object (a reference: its pinned
    source and mtime)."""

    kind: str
    local: str | None = None
    target: str = ""
    external: ExternalSource | None = None
    mtime_ns: int = 0


def clean_name(name: str, what: str = "name") -> str:
    """A path in a version as users write it ("out/", "./cfg/a.yaml") → its normal form, checked."""
    text = name.replace(os.sep, "/") if isinstance(name, str) else name
    if isinstance(text, str):
        while text.startswith("./"):
            text = text[2:]
        text = text.rstrip("/")
    try:
        return check_path(text)
    except InvalidName as e:
        raise InvalidName(f"invalid {what} {name!r}: {str(e).partition(': ')[2] or e}") from None


class TreeSpec:
    """The paths of a version being built and their sources, checked as they are added: a path given twice,
    or a file where a directory must be, is an error at the call that causes it."""

    def __init__(self) -> None:
        self.paths: dict[str, Source] = {}

    def _parents(self, path: str) -> list[str]:
        """The parent directories of `path`; one that is already a file or symlink here is an error."""
        parts = path.split("/")
        parents = ["/".join(parts[:i]) for i in range(1, len(parts))]
        for parent in parents:
            have = self.paths.get(parent)
            if have is not None and have.kind != DIR:
                raise ArtfsError(f"cannot add {path!r}: {parent!r} is already a {have.kind} in this artifact")
        return parents

    def _put(self, path: str, source: Source) -> None:
        for parent in self._parents(path):
            self.paths.setdefault(parent, Source(DIR))
        have = self.paths.get(path)
        if have is not None:
            if have.kind == DIR and source.kind == DIR:
                if source.local is not None:  # a real directory's mode and mtime beat a made-up parent's
                    self.paths[path] = source
                return
            raise ArtfsError(f"cannot add {path!r}: it is already in this artifact")
        self.paths[path] = source

    def add_file(self, local: str, name: str | None = None) -> str:
        """Add the file `local` as `name` (default: its base name); returns the name."""
        local = os.path.abspath(os.fspath(local))
        try:
            st = os.stat(local)
        except OSError as e:
            raise ArtfsError(f"cannot add {local}: {e.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise ArtfsError(f"cannot add {local}: not a regular file (add_dir adds a directory)")
        path = clean_name(name if name is not None else os.path.basename(local))
        self._put(path, Source(FILE, local))
        return path

    def add_dir(self, local: str, name: str | None = None) -> int:
        """Add what is in directory `local`, under the prefix `name` (default: at the top of the version);
        returns how many entries it added. The listing is taken now; the bytes are read at commit."""
        local = os.path.abspath(os.fspath(local))
        if not os.path.isdir(local):
            raise ArtfsError(f"cannot add {local}: not a directory" if os.path.exists(local)
                             else f"cannot add {local}: it does not exist")
        prefix = clean_name(name, "prefix") if name not in (None, "", ".", "./") else ""
        added: list[tuple[str, Source]] = []
        if prefix:
            added.append((prefix, Source(DIR, local)))
        for rel, st in walk_tree(local):
            path = f"{prefix}/{rel}" if prefix else rel
            full = os.path.join(local, rel)
            try:
                check_path(path)
            except InvalidName as e:
                raise ArtfsError(f"cannot add {full}: {e}") from None
            if stat.S_ISDIR(st.st_mode):
                added.append((path, Source(DIR, full)))
            elif stat.S_ISREG(st.st_mode):
                added.append((path, Source(FILE, full)))
            elif stat.S_ISLNK(st.st_mode):
                target = os.readlink(full)
                try:
                    check_symlink_target(path, target)
                except InvalidName:
                    raise ArtfsError(f"cannot add symlink {full} -> {target}: it points outside the tree") from None
                added.append((path, Source(LINK, full, target)))
            else:
                raise ArtfsError(f"cannot add {full}: not a regular file, directory or symlink")
        before = dict(self.paths)
        try:
            for path, source in added:
                self._put(path, source)
        except ArtfsError:
            self.paths = before  # all of the directory or none of it
            raise
        return len(added)

    def add_reference(self, uri: str, name: str | None = None, checksum: bool = True,
                      max_objects: int | None = None) -> list[str]:
        """Add the object at `uri` — or every object under it, as a prefix — as references (core/references.py):
        listed and pinned now; with `checksum`, read once at commit. Returns the paths, all or none added."""
        prefix = clean_name(name, "name") if name not in (None, "", ".", "./") else None
        found = expand(uri, prefix, checksum, max_objects)
        before = dict(self.paths)
        try:
            for path, external, mtime_ns in found:
                self._put(path, Source(REF, external=external, mtime_ns=mtime_ns))
        except ArtfsError:
            self.paths = before
            raise
        return [path for path, _, _ in found]

    def check_free(self, name: str) -> str:
        """`name`, cleaned, if a file may still be added there (new_file checks before it creates one)."""
        path = clean_name(name)
        self._parents(path)
        if path in self.paths:
            raise ArtfsError(f"cannot add {path!r}: it is already in this artifact")
        return path


class Logged(Protocol):
    """What log_artifact returns (tracking.ArtifactVersion), as an Artifact sees it."""

    @property
    def ref(self) -> str: ...

    def delete(self, delete_aliases: bool = False) -> None: ...


class Artifact:
    """A new version being put together: files added from where they are (read once, at log_artifact),
    or written into the artifact's own temporary directory with new_file. `run.log_artifact` publishes it
    as the next version of `name` (nothing new when its tree equals latest's)."""

    def __init__(self, name: str, type: str = "dataset",  # noqa: A002 - W&B's word
                 description: str | None = None, metadata: Mapping[str, Any] | None = None,
                 ttl: str | float | None = None) -> None:
        """`ttl` (e.g. "30d", or seconds): the version is soft-deleted that long after its creation."""
        self.name = check_name(name)
        self.ttl = parse_ttl(ttl)
        self.type = check_name(type, "type")
        self.description = description or ""
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.logged: Logged | None = None  # the version log_artifact made of it
        self.tree = TreeSpec()
        self._tmp: str | None = None

    def add_file(self, local_path: str | os.PathLike[str], name: str | None = None) -> str:
        """Add a file as `name` (a path in the version; default: its base name). Returns the name."""
        return self.tree.add_file(os.fspath(local_path), name)

    def add_dir(self, local_path: str | os.PathLike[str], name: str | None = None) -> None:
        """Add a directory's contents under the prefix `name` (default: at the top of the version)."""
        self.tree.add_dir(os.fspath(local_path), name)

    def add_reference(self, uri: str, name: str | None = None, checksum: bool = True,
                      max_objects: int | None = None) -> list[str]:
        """Add an external object (s3://, https://, http://, file://) without copying it: the version
        refers to it, pinned (VersionId/ETag, ETag or Last-Modified, size + mtime). A prefix (ending in '/',
        or an S3 key that is no object) adds every object under it, at `name/` + its relative path; more
        than `max_objects` (default 10,000) is an error with the count. `checksum` (default) reads each
        object once at log_artifact and records its chunk digests, so every later read is verified;
        without it, reads rely on the pin alone. Returns the paths added."""
        return self.tree.add_reference(uri, name, checksum, max_objects)

    @contextlib.contextmanager
    def new_file(self, name: str, mode: str = "w", encoding: str | None = None) -> Iterator[IO[Any]]:
        """Write a file of the version: `with artifact.new_file("meta/info.json") as f: f.write(...)`. It
        is added when the block ends without an error."""
        if not mode or mode[0] not in "wx" or "+" in mode:
            raise ArtfsError(f"new_file writes a new file: mode {mode!r} is not one of w, wb, x, xb")
        path = self.tree.check_free(name)
        full = os.path.join(self._build_dir(), *path.split("/"))
        os.makedirs(os.path.dirname(full), exist_ok=True)
        if os.path.lexists(full):  # left by an earlier new_file that failed
            shutil.rmtree(full) if os.path.isdir(full) and not os.path.islink(full) else os.unlink(full)
        with _removing_on_error(full), open(full, mode, encoding=encoding) as f:  # noqa: SIM117
            yield f
        self.tree.add_file(full, path)

    def _build_dir(self) -> str:
        if self._tmp is None:
            self._tmp = tempfile.mkdtemp(prefix=f"artfs-artifact-{self.name}-")
            weakref.finalize(self, shutil.rmtree, self._tmp, True)
        return self._tmp

    def delete(self, delete_aliases: bool = False) -> None:
        """Delete the version log_artifact made of this artifact."""
        if self.logged is None:
            raise ArtfsError(f"artifact {self.name!r} has not been logged: there is no version to delete")
        self.logged.delete(delete_aliases)

    def __repr__(self) -> str:
        return f"<Artifact {self.name} {self.type}, {len(self.tree.paths)} paths>"


def metadata_text(metadata: Mapping[str, Any] | None) -> dict[str, str]:
    """Version metadata is text (as `artfs put --meta k=v` makes it): strings stay, other values become
    their JSON (0.91 → "0.91", True → "true", [1, 2] → "[1, 2]")."""
    out: dict[str, str] = {}
    for key, value in (metadata or {}).items():
        if isinstance(value, str):
            out[str(key)] = value
            continue
        try:
            out[str(key)] = json.dumps(value, sort_keys=True)
        except (TypeError, ValueError) as e:
            raise ArtfsError(f"metadata {key!r} cannot be stored: {e}") from None
    return out


def commit_spec(repo: Repo, spec: TreeSpec, name: str, type_: str | None, message: str,
                metadata: dict[str, str], aliases: list[str] | tuple[str, ...], run: str | None,
                ttl: float | None = None, progress: Any = None, base: int | None = None,
                force: bool = False, copy_references: bool = False) -> CommitResult:
    """Publish the tree `spec` describes as the next version of `name` (nothing new if it equals latest),
    made by run `run`. Each file is stat'ed now and read once; if it changes while read, nothing is
    published. `progress`, `base` and `force` as for `artfs put` (Committer.publish); `copy_references`
    stores referenced objects as content (`artfs put --ref … --copy`)."""
    check_name(name)
    for a in aliases:
        check_alias(a)
    check_message(message, metadata)
    repo.check_type(name, type_)
    committer = Committer(repo, name, progress)
    try:
        for path in sorted(spec.paths, key=path_key):
            source = spec.paths[path]
            if source.kind == REF:
                assert source.external is not None
                committer.add_reference(path, source.external, source.mtime_ns, copy=copy_references)
            elif source.kind == DIR:
                if source.local is None:
                    committer.add_dir(path, 0o755, _now_ns())
                else:
                    st = _stat(source.local, os.lstat)
                    committer.add_dir(path, st.st_mode, st.st_mtime_ns)
            elif source.kind == LINK:
                assert source.local is not None
                committer.add_symlink(path, source.target, _stat(source.local, os.lstat).st_mtime_ns)
            else:
                assert source.local is not None
                st = _stat(source.local, os.stat)
                if not stat.S_ISREG(st.st_mode):
                    raise ArtfsError(f"cannot store {source.local}: it is no longer a regular file")
                committer.add_file(path, source.local, st.st_mode, st.st_mtime_ns, st.st_size, expect=st)
    except BaseException:
        committer.close()
        raise
    return committer.publish(type_, message, metadata, aliases, run=run, ttl=ttl, base=base, force=force)


def _stat(path: str, how: Any) -> os.stat_result:
    try:
        return how(path)
    except OSError as e:
        raise ArtfsError(f"cannot read {path}: {e.strerror} (it was added to the artifact)") from None


def _now_ns() -> int:
    return time.time_ns()


# --- out: a mount, or a local copy ---------------------------------------------------------------


def mounted_version(store_uri: str, rec: VersionRecord) -> str | None:
    """`<mount>/<name>/v<N>` in a running artfs mount of the same store on this machine that shows this
    exact version (its digest), else None. A version published in the last poll interval may not be shown
    yet (the caller then makes a copy); a stale mount or another user's mount answers no xattr and is
    skipped."""
    from artfs.fs.mountpoint import FSTYPE, mounts  # the mount table only: no FUSE, stays light

    want = canonical_store_uri(store_uri)
    for entry in mounts():
        if entry.fstype != FSTYPE:
            continue
        try:
            if canonical_store_uri(os.getxattr(entry.mountpoint, "user.artfs.store").decode()) != want:
                continue
            path = os.path.join(entry.mountpoint, rec.artifact, f"v{rec.version}")
            if os.getxattr(path, "user.artfs.digest").decode() == rec.digest:
                return path
        except (OSError, UnicodeError):
            continue
    return None


def local_copy(repo: Repo, rec: VersionRecord, root: str | None = None) -> str:
    """The version's files in a local directory: `root` (new or empty, filled now), or else a copy in the
    cache, exported once and reused (exports are atomic: a copy that exists is whole)."""
    if root is not None:
        return export_version(repo, rec, os.path.abspath(os.fspath(root))).dest
    dest = repo.places.version_copy(repo.store.uri, rec.artifact, rec.version, rec.digest)
    if os.path.isdir(dest):
        return dest
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    try:
        export_version(repo, rec, dest)
    except ArtfsError:
        if os.path.isdir(dest):  # another process exported it at the same time
            return dest
        raise
    return dest


@contextlib.contextmanager
def _removing_on_error(path: str) -> Iterator[None]:
    """Remove the file `path` if the block fails (new_file: a half-written file is not added)."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
