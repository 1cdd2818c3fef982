"""Observed inputs: opens of version files by a run's processes, counted per (run, version) and written to
the store as the run's inputs (core/runs.py record_input, how="observed").

- **At open, not read**: the page cache hides re-reads, so an open is the one event every reader makes.
  Counted per (run, version): the distinct files opened and the sum of their sizes.
- **Attributed** by the process tree (attribution.py); with no run registered, an open costs one stat.
- **Written off the loop, coalesced**: a (run, version) seen for the first time is written within
  FIRST_DELAY seconds (so a run killed mid-way still shows what it read), and again when its counts grew,
  at most every UPDATE_EVERY seconds; as soon as a run leaves the registry (it ended), and at unmount,
  whatever grew is written at once. Each write is a cumulative snapshot under this mount's `source`
  (a reader keeps the largest per source), so a retried or repeated write never counts twice.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import trio

from artfs.core import runs
from artfs.core.places import Places
from artfs.core.records import VersionRecord
from artfs.core.repo import Repo
from artfs.fs.attribution import Attribution

log = logging.getLogger(__name__)

FIRST_DELAY = 0.5  # seconds a first open waits for its burst of siblings before the first write
UPDATE_EVERY = 5.0  # seconds between two snapshots of one (run, version) while its counts grow
TICK = 1.0  # how often the writer looks for runs that ended (their last counts go out at once)
RETRY_AFTER = 5.0  # a failed write is tried again after this long (the store may be away)

UseKey = tuple[str, str, int]  # (run id, artifact, version)


@dataclass
class _Use:
    """What one run read of one version, through this mount."""

    rec: VersionRecord | None
    paths: set[str] = field(default_factory=set)
    bytes: int = 0
    written: tuple[int, int] = (0, 0)  # (files, bytes) of the last snapshot in the store
    due: float = 0.0  # monotonic time the next snapshot may go out
    failing: bool = False  # the last write failed: wait RETRY_AFTER, even for a run that ended


def mount_source(mountpoint: str) -> str:
    """This daemon's name as an input source: host, mount point (hashed) and pid, within the characters a
    store key allows. One per daemon: a restarted daemon's counts start again, as a new source."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname())[:64] or "host"
    tag = hashlib.sha256(os.path.abspath(mountpoint).encode()).hexdigest()[:8]
    return f"mount@{host}:{tag}.{os.getpid()}"


class Capture:
    """The observed inputs of the runs using one mount (see the module docstring)."""

    def __init__(self, repo: Repo, places: Places, source: str, attribution: Attribution | None = None) -> None:
        self.repo = repo
        self.source = source
        self.attribution = attribution or Attribution(places, repo.store.uri)
        self._uses: dict[UseKey, _Use] = {}
        self._dirty: set[UseKey] = set()
        self._wake = trio.Event()

    def run_of(self, pid: int) -> str | None:
        """The run of a caller (a FUSE request's pid, a control socket's peer), or None."""
        return self.attribution.run_of(pid)

    def opened(self, pid: int, artifact: str, version: int, path: str, size: int,
               rec: VersionRecord | None = None) -> None:
        """A file of `artifact:v<version>` was opened by `pid` (on the loop; must stay cheap). `rec` when the
        caller has it; otherwise the writer reads it."""
        run = self.attribution.run_of(pid)  # one stat when no run is registered
        if run is None:
            return
        key = (run, artifact, version)
        use = self._uses.get(key)
        if use is None:
            use = self._uses[key] = _Use(rec, due=time.monotonic() + FIRST_DELAY)
        elif path in use.paths:
            return
        if use.rec is None:
            use.rec = rec
        use.paths.add(path)
        use.bytes += size
        if key not in self._dirty:
            self._dirty.add(key)
            self._wake.set()

    # --- the writer ---------------------------------------------------------------------------------

    async def serve(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """The background writer, until cancelled; then what grew is written (for up to 10 s)."""
        task_status.started()
        try:
            while True:
                with trio.move_on_after(self._idle()):
                    await self._wake.wait()
                self._wake = trio.Event()
                if self._dirty:
                    await self._write(final=False)
                self._forget_ended()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                await self._write(final=True)
            self.attribution.close()

    def _forget_ended(self) -> None:
        """Drop what runs that ended read here, once it is all in the store (their paths can be many)."""
        if not self._uses:
            return
        running = {r.run_id for r in self.attribution.watcher.runs()}
        for key in [k for k in self._uses if k[0] not in running and k not in self._dirty]:
            del self._uses[key]

    def _idle(self) -> float:
        """Seconds until the next snapshot is due, at most TICK (ended runs are noticed every TICK)."""
        if not self._dirty:
            return TICK
        due = min(self._uses[k].due for k in self._dirty)
        return min(TICK, max(0.0, due - time.monotonic()))

    async def _write(self, final: bool) -> None:
        now = time.monotonic()
        running = {r.run_id for r in self.attribution.watcher.runs()}
        batch = []
        for key in sorted(self._dirty):
            use = self._uses[key]
            ended = key[0] not in running and not use.failing  # its last counts: at once, unless retrying
            if final or ended or now >= use.due:
                batch.append((key, use.rec, (len(use.paths), use.bytes)))
        if not batch:
            return
        # the keys stay dirty until written: a write cancelled halfway (unmount) is made by the final one
        done = await trio.to_thread.run_sync(self._store, batch, abandon_on_cancel=final)
        now = time.monotonic()
        for key, _, counts in batch:
            use = self._uses[key]
            rec = done.get(key)
            use.failing = rec is None
            if rec is not None:
                use.rec, use.written, use.due = rec, counts, now + UPDATE_EVERY
            else:
                use.due = now + RETRY_AFTER
            if (len(use.paths), use.bytes) == use.written:
                self._dirty.discard(key)  # else it grew meanwhile, or failed: a later round

    def _store(self, batch: list[tuple[UseKey, VersionRecord | None, tuple[int, int]]]) -> dict[UseKey, VersionRecord]:
        """Worker thread: one snapshot per (run, version); the keys written, with their version records."""
        done = {}
        for key, rec, (files, nbytes) in batch:
            run, artifact, version = key
            try:
                if rec is None:  # an open through staging/: the base version's record, from the index
                    rec = self.repo.version(artifact, version)
                runs.record_input(self.repo, run, rec, "observed", files, nbytes, source=self.source)
            except Exception as e:  # noqa: BLE001 - the store may be away: retried, never fatal to the mount
                log.warning("cannot record %s:v%d as an input of run %s yet: %s", artifact, version, run, e)
                continue
            done[key] = rec
            log.debug("run %s read %d files, %d bytes of %s:v%d", run, files, nbytes, artifact, version)
        return done
