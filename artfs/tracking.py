"""The Python API in the shape W&B users know: runs that use and log artifacts.

    import artfs
    with artfs.init(job_type="train", config={"lr": 0.01}) as run:
        data = run.use_artifact("animals:latest")       # a declared input, the exact version: animals:v3
        path = data.path()                              # its directory in a mount of this store, else a copy
        model = artfs.Artifact("resnet", type="model", metadata={"acc": 0.91})
        model.add_dir("out/"); model.add_file("config.yaml", name="cfg/config.yaml")
        run.log_artifact(model, aliases=["candidate"])  # resnet:vN, whose record names this run

A run is recorded in the store as `artfs run` records one (core/runs.py): its start, heartbeats from a
daemon thread while it is open, its end — failed when the `with` block raises, or at exit after an uncaught
exception. Its process is registered as the root of the run on this machine (core/run_registry.py), so a
mount of the same store attributes the files it and its children open to it. Inside `artfs run`
($ARTFS_RUN_ID), init() joins that run instead of starting a second one, and leaves its end to `artfs run`.
The file side (building a tree, mounts, copies) is artfs/artifact_files.py.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from artfs.artifact_files import Artifact, commit_spec, local_copy, metadata_text, mounted_version
from artfs.core import run_registry
from artfs.core import runs as core_runs
from artfs.core.manifest import FILE, LINK
from artfs.core.names import parse_ref
from artfs.core.records import VersionRecord
from artfs.core.repo import Repo
from artfs.errors import ArtfsError, NotFound
from artfs.settings import Settings

log = logging.getLogger(__name__)


class _Store:
    """One store as the API's objects reach it. Its Repo is opened once per process and kept until exit:
    opening one costs a client and an index (~0.1-0.5 s on S3), and run and version objects are used long
    after the call that made them."""

    def __init__(self, uri: str, settings: Settings) -> None:
        self.uri = uri
        self.settings = settings

    def repo(self) -> Repo:
        return _repo(self.settings, self.uri)


_repos: dict[tuple[Settings, str | None, int], Repo] = {}
_repos_lock = threading.Lock()


def _repo(settings: Settings, uri: str | None, create: bool = False) -> Repo:
    """This process's Repo of the store `uri` (None: the settings' store), opened on first use."""
    key = (settings, uri, os.getpid())  # a forked child opens its own
    with _repos_lock:
        repo = _repos.get(key)
        if repo is None:
            if not _repos:
                atexit.register(_close_repos)  # before any run's exit hook: runs after it
            repo = settings.open_repo(uri, create=create)
            _repos[key] = _repos[(settings, repo.store.uri, key[2])] = repo
        return repo


def _close_repos() -> None:
    with _repos_lock:
        repos = {id(r): r for k, r in _repos.items() if k[2] == os.getpid()}
        _repos.clear()
    for repo in repos.values():
        repo.close()


def _opened(store: str | None, create: bool = False) -> tuple[_Store, Repo]:
    settings = Settings.from_env()
    repo = _repo(settings, store, create)
    return _Store(repo.store.uri, settings), repo


# --- versions --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArtifactFile:
    """One file (or symlink) of a version: its path in the version, size, content digest (xxh3-128, hex)."""

    path: str
    size: int
    digest: str
    kind: str = "file"  # or "symlink" (its size is the target's length, its digest empty)


class ArtifactVersion:
    """One immutable version (`animals:v3`) of a store; what use_artifact and log_artifact return."""

    def __init__(self, store: _Store, record: VersionRecord) -> None:
        self._store = store
        self.record = record

    name = property(lambda self: self.record.artifact, doc="the artifact's name (`animals`)")
    version = property(lambda self: self.record.version, doc="the version number (3 for `animals:v3`)")
    ref = property(lambda self: self.record.ref, doc="`animals:v3`")
    type = property(lambda self: self.record.type)
    digest = property(lambda self: self.record.digest, doc="the tree digest: equal trees, equal digests")
    metadata = property(lambda self: dict(self.record.metadata), doc="text values (see metadata_text)")
    description = property(lambda self: self.record.message)
    created = property(lambda self: self.record.created)
    size = property(lambda self: self.record.bytes, doc="bytes in its files")
    file_count = property(lambda self: self.record.files)
    store = property(lambda self: self._store.uri)

    @property
    def aliases(self) -> list[str]:
        """The aliases pointing at this version now, `latest` first when it is the newest."""
        view = self._store.repo().view(self.name)  # latest and aliases name live versions only
        names = sorted(a for a, v in view.aliases.items() if v == self.version)
        return (["latest"] if view.latest == self.version else []) + names

    def files(self) -> list[ArtifactFile]:
        """Its files and symlinks in path order (directories are implied by the paths)."""
        repo = self._store.repo()
        _header, entries = repo.entries(self.record)
        return [ArtifactFile(e.path, e.size, e.digest.hex(), "file" if e.kind == FILE else "symlink")
                for e in entries if e.kind in (FILE, LINK)]

    def path(self) -> str:
        """Its directory: in a running mount of this store on this machine (nothing copied; reads there are
        observed inputs of the run that makes them), else a local copy in the cache, made once."""
        mounted = mounted_version(self._store.uri, self.record)
        if mounted is not None:
            return mounted
        repo = self._store.repo()
        return local_copy(repo, self.record)

    def download(self, root: str | os.PathLike[str] | None = None) -> str:
        """A local copy of its files: in `root` (a new or empty directory), else the cache's, made once."""
        repo = self._store.repo()
        return local_copy(repo, self.record, None if root is None else os.fspath(root))

    def logged_by(self) -> Run | None:
        """The run that produced it, when it was made inside one (and that run's record is readable)."""
        if self.record.run is None:
            return None
        producer = Run(self._store, self.record.run)
        try:
            producer.info()
        except NotFound:
            return None
        return producer

    def used_by(self) -> list[Run]:
        """The runs that used it (declared or observed through a mount), oldest first."""
        repo = self._store.repo()
        ids = core_runs.runs_using(repo, self.name, self.version)
        return [Run(self._store, run_id) for run_id in ids]

    def delete(self, delete_aliases: bool = False) -> None:
        """Delete this version (artfs.api.delete); with `delete_aliases`, also when aliases point at it."""
        from artfs import api

        delete = getattr(api, "delete", None)
        if delete is None:
            raise ArtfsError("deleting versions is not supported by this artfs")
        delete(self.ref, delete_aliases=delete_aliases, store=self._store.uri)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ArtifactVersion) and (self._store.uri, self.record) == (other._store.uri,
                                                                                          other.record)

    def __hash__(self) -> int:
        return hash((self._store.uri, self.ref, self.digest))

    def __repr__(self) -> str:
        return f"<ArtifactVersion {self.ref} {self.type} {self.digest[:12]}>"


# --- runs ------------------------------------------------------------------------------------------


class Run:
    """A run: the one init() returned (open in this process until finish()), or one read from the store
    (artfs.run, artfs.runs, ArtifactVersion.used_by), which can be looked at but not written to."""

    def __init__(self, store: _Store, run_id: str, info: core_runs.RunInfo | None = None) -> None:
        self._store = store
        self.id = run_id
        self._info = info
        self._open = False
        self._joined = False
        self._pid = os.getpid()
        self._stop = threading.Event()
        self._beats: threading.Thread | None = None
        self._registration = contextlib.ExitStack()

    # --- what the store says ---

    def info(self) -> core_runs.RunInfo:
        """Everything the store says about the run now (status, inputs, outputs), read afresh."""
        repo = self._store.repo()
        self._info = core_runs.run_info(repo, self.id)
        return self._info

    @property
    def record(self) -> core_runs.RunRecord:
        return (self._info or self.info()).record

    name = property(lambda self: self.record.name)
    job_type = property(lambda self: self.record.job_type)
    config = property(lambda self: dict(self.record.config))
    started = property(lambda self: self.record.started)
    store = property(lambda self: self._store.uri)
    status = property(lambda self: self.info().status, doc="running, finished, failed or crashed (fresh)")

    def logged_artifacts(self) -> list[ArtifactVersion]:
        """The versions the run published (outputs)."""
        info = self.info()
        return self._versions(info.outputs)

    def used_artifacts(self) -> list[ArtifactVersion]:
        """The exact versions the run used (inputs: declared through use_artifact, or observed by a mount)."""
        info = self.info()
        return self._versions([(i.artifact, i.version) for i in info.inputs])

    def _versions(self, refs: list[tuple[str, int]]) -> list[ArtifactVersion]:
        out = []
        repo = self._store.repo()
        for artifact, number in refs:
            try:
                out.append(ArtifactVersion(self._store, repo.version(artifact, number)))
            except NotFound:
                log.info("%s:v%d, recorded by run %s, is gone", artifact, number, self.id)
        return out

    # --- what an open run does ---

    def _check_open(self) -> Repo:
        if not self._open or os.getpid() != self._pid:
            raise ArtfsError(f"run {self.id} is not open in this process: use the run artfs.init() returned, "
                             "before finish()")
        return self._store.repo()

    def use_artifact(self, ref: str | ArtifactVersion) -> ArtifactVersion:
        """Declare an input: `name`, `name:latest`, `name:alias` or `name:vN`, resolved now to the exact
        version, which is what the run records and what this returns."""
        repo = self._check_open()
        rec = repo.resolve(parse_ref(ref.ref if isinstance(ref, ArtifactVersion) else ref))
        core_runs.record_input(repo, self.id, rec, "declared", 0, 0, "api")
        return ArtifactVersion(self._store, rec)

    def log_artifact(self, artifact: Artifact, aliases: list[str] | tuple[str, ...] = ()) -> ArtifactVersion:
        """Publish `artifact` as the next version of its name, made by this run, and point `aliases` at it.
        A tree equal to latest's makes no new version: latest is returned (with the aliases set on it)."""
        repo = self._check_open()
        if not isinstance(artifact, Artifact):
            raise ArtfsError(f"log_artifact takes an artfs.Artifact, not {type(artifact).__name__}")
        if isinstance(aliases, str):
            aliases = [aliases]
        result = commit_spec(repo, artifact.tree, artifact.name, artifact.type, artifact.description,
                             metadata_text(artifact.metadata), list(aliases), run=self.id, ttl=artifact.ttl)
        rec = result.record or repo.resolve(artifact.name)
        artifact.logged = ArtifactVersion(self._store, rec)
        return artifact.logged

    def finish(self, exit_code: int = 0) -> None:
        """End the run: finished (exit code 0) or failed. A joined run is left to `artfs run` to end. Once
        only; later calls do nothing."""
        if not self._open or os.getpid() != self._pid:
            return
        self._open = False
        _open_runs.discard(self)
        self._stop.set()
        if self._beats is not None:
            self._beats.join()  # no heartbeat may land after the end record
        try:
            if not self._joined:
                core_runs.end_run(self._store.repo(), self.id, "finished" if exit_code == 0 else "failed",
                                  exit_code)
        finally:
            self._registration.close()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        self.finish(_exit_code(exc))

    def _beat(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                core_runs.heartbeat(self._store.repo(), self.id)
            except Exception as e:  # noqa: BLE001 - a missed beat is logged; the next one may get through
                log.warning("run %s: heartbeat failed: %s", self.id, e)

    def __repr__(self) -> str:
        state = "open" if self._open else "closed"
        return f"<Run {self.id} ({state})>"


def _exit_code(exc: BaseException | None) -> int:
    """What an exception leaving the run's block means as an exit code, as the shell would report it."""
    if exc is None:
        return 0
    if isinstance(exc, SystemExit):
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    if isinstance(exc, KeyboardInterrupt):
        return 130
    return 1


# --- module functions ------------------------------------------------------------------------------


def init(name: str | None = None, job_type: str | None = None, config: Mapping[str, Any] | None = None,
         store: str | None = None) -> Run:
    """Start a run in `store` (default: $ARTFS_STORE, else the embedded default) and return it, open; use
    it as a context manager, or call `finish()`. Inside `artfs run`, join that run instead."""
    settings = Settings.from_env()
    if settings.run_id is not None:
        return _join(settings, settings.run_id, name, job_type, config, store)
    repo = _repo(settings, store, create=True)
    interval = settings.run_heartbeat or core_runs.DEFAULT_HEARTBEAT
    rec = core_runs.start_run(repo, name=name, job_type=job_type, config=dict(config or {}),
                              command=list(getattr(sys, "orig_argv", sys.argv)), cwd=os.getcwd(),
                              heartbeat=interval)
    run_ = Run(_Store(repo.store.uri, settings), rec.id, core_runs.RunInfo(record=rec, status="running"))
    try:
        run_._registration.enter_context(run_registry.register(settings.places, rec.id, repo.store.uri))
    except BaseException:
        core_runs.end_run(repo, rec.id, "failed", 1)
        raise
    run_._beats = threading.Thread(target=run_._beat, args=(interval,), name=f"artfs-heartbeat-{rec.id}",
                                   daemon=True)
    _opened_here(run_)
    run_._beats.start()
    return run_


def _join(settings: Settings, run_id: str, name: str | None, job_type: str | None,
          config: Mapping[str, Any] | None, store: str | None) -> Run:
    """The run `artfs run` started for this process, in the store it registered (unless `store` says)."""
    if store is None:
        store = next((r.store_uri for r in run_registry.active(settings.places) if r.run_id == run_id), None)
    repo = _repo(settings, store)
    try:
        info = core_runs.run_info(repo, run_id)
    except NotFound:
        raise ArtfsError(f"$ARTFS_RUN_ID names run {run_id}, which is not in {repo.store.uri}: "
                         "pass init(store=...) the store `artfs run` records it in") from None
    rec = info.record
    ignored = [what for what, given, have in (("name", name, rec.name), ("job_type", job_type, rec.job_type))
               if given is not None and given != have]
    if config and any(rec.config.get(k) != v for k, v in config.items()):
        ignored.append("config")
    if ignored:
        log.warning("joining run %s started by `artfs run`: its %s stays as recorded (give them to `artfs run`)",
                    run_id, ", ".join(ignored))
    run_ = Run(_Store(repo.store.uri, settings), run_id, info)
    run_._joined = True
    _opened_here(run_)
    return run_


def runs(store: str | None = None, limit: int | None = None) -> list[Run]:
    """The runs of `store`, newest first (at most `limit`)."""
    handle, repo = _opened(store)
    return [Run(handle, info.id, info) for info in core_runs.list_runs(repo, limit)]


def run(run_id: str, store: str | None = None) -> Run:
    """The run with this id (NotFound if there is none)."""
    handle, repo = _opened(store)
    return Run(handle, run_id, core_runs.run_info(repo, run_id))


# --- runs open in this process, ended at exit ----------------------------------------------------

_open_runs: set[Run] = set()
_uncaught: list[BaseException] = []
_hooked = False


def _opened_here(run_: Run) -> None:
    """Mark `run_` open; the first time, hook the interpreter's exit so a run left open
    ends with it: failed after an uncaught exception, else finished."""
    global _hooked
    run_._open = True
    _open_runs.add(run_)
    if not _hooked:
        _hooked = True
        previous = sys.excepthook

        def excepthook(tp: type[BaseException], value: BaseException, tb: Any) -> None:
            _uncaught.append(value)
            previous(tp, value, tb)

        sys.excepthook = excepthook
        atexit.register(_finish_open_runs)


def _finish_open_runs() -> None:
    code = _exit_code(_uncaught[-1]) if _uncaught else 0
    for run_ in list(_open_runs):
        try:
            run_.finish(code)
        except Exception as e:  # noqa: BLE001 - at exit: say it, and end the others
            log.warning("run %s could not be ended: %s", run_.id, e)
