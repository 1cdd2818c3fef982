"""Blocking calls of FUSE handlers run in worker threads, handed over with as little work as possible.

A change in a staging directory may block (a big pwrite, a copy-up fetching chunks, the area's lock
held by another call), so it is a round trip loop → thread → loop. `trio.to_thread.run_sync` does that with a
capacity limiter, context copying and cancellation bookkeeping: ~120 µs a call on a quiet 2-core
machine, 2-3x a pyfuse3 request's own cost, and far more under load (690-980 µs against 60-370 µs for this
module, measured side by side on a loaded machine). So cheap calls skip it altogether when they can
(areas.peek: a `cp -r` of small files makes no hop at all); the rest come here.

Here a call is a put on a queue that idle workers wait on, and the answer is a `reschedule` of the waiting
task through the trio token. Workers are started as needed (a slow call, e.g. a copy-up waiting on the
store, never holds up the quick ones behind it) up to `max_threads`, then calls queue; they stay for the
process's life, idle. A waiting handler cannot be cancelled, as with `trio.to_thread.run_sync` by default:
pyfuse3 never cancels one, and the call must finish before its answer is known.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import outcome
import trio

T = TypeVar("T")

MAX_THREADS = 32

_Job = tuple[Callable[..., Any], tuple[Any, ...], Any, trio.lowlevel.TrioToken]


class Handoff:
    """A pool of worker threads for blocking calls made from the trio loop (see the module docstring)."""

    def __init__(self, max_threads: int = MAX_THREADS, name: str = "artfs-worker") -> None:
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0  # workers waiting for a call
        self._backlog = 0  # calls queued with every worker busy
        self._max = max_threads
        self._name = name

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) in a worker thread; its result, or its exception raised here."""
        task = trio.lowlevel.current_task()
        with self._lock:
            if self._idle:
                self._idle -= 1  # that worker is spoken for: the next call may need another
            elif self._threads < self._max:
                self._threads += 1
                threading.Thread(target=self._work, name=f"{self._name}-{self._threads}", daemon=True).start()
            else:
                self._backlog += 1
        self._jobs.put((fn, args, task, trio.lowlevel.current_trio_token()))
        result: T = await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)
        return result

    def _work(self) -> None:
        jobs = self._jobs
        while True:
            fn, args, task, token = jobs.get()
            result = outcome.capture(fn, *args)
            with self._lock:
                if self._backlog:
                    self._backlog -= 1  # a queued call is this worker's next
                else:
                    self._idle += 1
            try:
                token.run_sync_soon(trio.lowlevel.reschedule, task, result)
            except trio.RunFinishedError:
                pass  # the loop is gone (the mount ended): nobody is waiting any more
            del fn, args, task, result  # hold nothing while idle
