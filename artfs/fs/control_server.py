"""The daemon's control socket: `seal`, `status`, `discard` and `ref_add` (`artfs ref add`) of its staging
directories.

The protocol (client side: artfs/staging_client.py) is one JSON request line per connection, answered with
`{"progress": done, "total": n}` lines while a seal works, then `{"ok": true, "result": {...}}` or
`{"ok": false, "error": "...", "conflicts": [...]}`. The socket is where core/places.py says (mode
0600 in a 0700 directory: only the mount's owner may seal through it) and is removed at unmount; a
staging directory names it in `user.artfs.control`.

A seal asked for by a process of a run (its pid from SO_PEERCRED, attributed like an open: fs/attribution.py)
publishes a version the run produced: `VersionRecord.run`, and an output of the run (core/runs.py).

A seal runs in a worker thread and cannot be interrupted halfway, so a request is shielded from
cancellation: a client that hangs up, or an unmount, lets it finish and leaves the kernel's view
consistent (areas.py invalidates what the new generation made stale).

Test hook: with `$ARTFS_TEST_SEAL_GATE` (settings.test_seal_gate) set to a path, the daemon's first seal
stops at its first progress step (the area frozen, nothing published yet), creates that file, and goes on
once the file is deleted — so tests can write during a seal, or kill the daemon in the middle of one,
without racing a clock.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import outcome
import trio

from artfs.core.merge import MergeConflict
from artfs.errors import ArtfsError
from artfs.fs.areas import WRITERS_WAIT, Areas, SealProgress

log = logging.getLogger(__name__)

MAX_REQUEST = 1 << 20
PROGRESS_EVERY = 0.25  # seconds between progress lines


RunOf = Callable[[int], "str | None"]  # a process id → the run it belongs to (fs/attribution.py), or None


async def serve(path: str, areas: Areas, seal_gate: str | None = None, run_of: RunOf | None = None,
                task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Listen on `path` (core/places.py says where) until cancelled, then remove it. `run_of` finds the run
    of the process that asks for a seal (its pid from SO_PEERCRED): the sealed version is that run's output."""
    gates = [seal_gate] if seal_gate else []  # the test hook (module docstring): the first seal only
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    os.chmod(os.path.dirname(path), 0o700)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # left by a daemon killed with -9 (the mount point is ours: prepare() checked)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await sock.bind(path)
        os.chmod(path, 0o600)
        sock.listen(16)
        task_status.started()
        log.info("control socket %s", path)

        async def handle(stream: trio.SocketStream) -> None:
            await _serve_one(stream, areas, gates, run_of)

        await trio.serve_listeners(handle, [trio.SocketListener(sock)])
    finally:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


async def _read_line(stream: trio.abc.Stream) -> bytes:
    buf = bytearray()
    while b"\n" not in buf:
        data = await stream.receive_some(65536)
        if not data:
            break
        buf += data
        if len(buf) > MAX_REQUEST:
            raise ArtfsError("request too long")
    return bytes(buf.split(b"\n", 1)[0])


async def _send(stream: trio.abc.Stream, message: dict) -> bool:
    """False if the client has gone (the work goes on without it)."""
    try:
        await stream.send_all(json.dumps(message).encode() + b"\n")
        return True
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return False


def _peer_pid(stream: trio.SocketStream) -> int:
    """The pid of the process at the other end (the kernel's word, SO_PEERCRED); 0 when unknown (another pid
    namespace)."""
    try:
        creds = stream.socket.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return 0
    return struct.unpack("3i", creds)[0]


async def _serve_one(stream: trio.SocketStream, areas: Areas, gates: list[str], run_of: RunOf | None = None) -> None:
    async with stream:
        try:
            with trio.fail_after(30):
                line = await _read_line(stream)
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("not an object")
        except (ValueError, ArtfsError, trio.TooSlowError, trio.BrokenResourceError) as e:
            await _send(stream, {"ok": False, "error": f"bad request: {e}"})
            return
        with trio.CancelScope(shield=True):
            reply = await _answer(stream, areas, request, gates, run_of)
            await _send(stream, reply)


async def _answer(stream: trio.SocketStream, areas: Areas, request: dict[str, Any], gates: list[str],
                  run_of: RunOf | None = None) -> dict:
    op = request.get("op")
    name: Any = request.get("artifact")  # unchecked JSON: Areas checks it is the name of an artifact
    try:
        if op == "seal":
            run = run_of(_peer_pid(stream)) if run_of is not None else None  # a seal inside a run: its output
            result = await _seal_with_progress(stream, areas, name, request, gates, run)
        elif op == "status":
            result = await areas.status(name)
        elif op == "discard":
            result = await areas.discard(name)
        elif op == "ref_add":
            result = await areas.add_reference(name, request.get("path"), request.get("uri"),
                                               request.get("checksum", True) is not False, request.get("max_objects"))
        else:
            return {"ok": False, "error": f"unknown request {op!r} (seal, status, discard or ref_add)"}
    except MergeConflict as e:
        log.warning("seal of %s refused: %s", name, e)
        return {"ok": False, "error": str(e), "conflicts": e.paths}
    except ArtfsError as e:
        log.warning("%s of %s failed: %s", op, name, e)
        return {"ok": False, "error": str(e)}
    except Exception as e:
        log.exception("%s of %s failed", op, name)
        return {"ok": False, "error": f"{op} failed: {type(e).__name__}: {e}"}
    return {"ok": True, "result": result}


class _Gated(SealProgress):
    """The test hook of the module docstring: the first step waits at the gate."""

    def __init__(self, gate: str) -> None:
        super().__init__()
        self.gate: str | None = gate

    def __call__(self, n: int) -> None:
        if self.gate:
            gate, self.gate = self.gate, None
            _wait_at_gate(gate)
        super().__call__(n)


async def _seal_with_progress(stream: trio.SocketStream, areas: Areas, name: str, request: dict,
                              gates: list[str], run: str | None = None) -> dict:
    """The seal in a thread; its progress (bytes through the chunker) reported every PROGRESS_EVERY s."""
    gate = gates.pop() if gates else None  # once per daemon
    progress = _Gated(gate) if gate else SealProgress()
    metadata = request.get("metadata") or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ArtfsError("metadata must map keys to strings")
    wait = request.get("wait", WRITERS_WAIT)
    if not isinstance(wait, int | float) or isinstance(wait, bool) or not 0 <= wait <= 24 * 3600:
        raise ArtfsError("wait must be a number of seconds from 0 to 86400")
    ttl = request.get("ttl")  # seconds: the version is deleted that long after its creation (core/lifecycle.py)
    if ttl is not None and (not isinstance(ttl, int | float) or isinstance(ttl, bool) or not ttl > 0):
        raise ArtfsError("ttl must be a positive number of seconds")
    async with trio.open_nursery() as nursery:

        async def report() -> None:
            sent = -1
            while True:
                await trio.sleep(PROGRESS_EVERY)
                if progress.done != sent:
                    sent = progress.done
                    if not await _send(stream, {"progress": sent, "total": progress.total}):
                        return

        nursery.start_soon(report)
        # captured, so that a refusal (MergeConflict) reaches the caller as itself, not in an ExceptionGroup
        result = await outcome.acapture(
            areas.seal, name, str(request.get("message") or ""), list(request.get("aliases") or []),
            request.get("type"), metadata, bool(request.get("force")), progress, wait, run, ttl)
        nursery.cancel_scope.cancel()
    return result.unwrap()


def _wait_at_gate(gate: str, limit: float = 120.0) -> None:
    with open(gate, "w") as f:
        f.write(f"{os.getpid()}\n")
    deadline = time.monotonic() + limit
    while os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.02)

