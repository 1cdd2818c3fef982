"""Talking to a mount daemon about a staging directory: `request_seal`, `request_status`, `request_discard`
(the Python API's `seal`, `status`, `discard`; the CLI's commands of the same names), `request_ref_add`
(`artfs ref add`).

The daemon owns a staging tree while it is mounted (open files, inodes, the freeze during a seal), so
these requests go to it rather than around it. A staging directory names its daemon's control socket
in the extended attribute `user.artfs.control` and its artifact in `user.artfs.artifact`; the request
is one JSON line, and the daemon answers with JSON lines: `{"progress": done, "total": n}` while it
works, then `{"ok": true, "result": {...}}` or `{"ok": false, "error": "...", "conflicts": [...]}`.
Plain sockets and JSON, so a shell script, training code and the CLI all use the same thing.
The daemon's side is artfs/fs/control_server.py.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable

from artfs.errors import ArtfsError, Conflict

CONTROL_XATTR = "user.artfs.control"
ARTIFACT_XATTR = "user.artfs.artifact"
Progress = Callable[[int, int], None]


class SealConflict(Conflict):
    """The daemon refused a seal: these paths changed both in staging and in the newer latest."""

    def __init__(self, message: str, paths: list[str]) -> None:
        super().__init__(message)
        self.paths = paths


def staging_target(path: str) -> tuple[str, str]:
    """(control socket path, artifact name) for a staging directory inside a mount."""
    if not os.path.exists(path):
        from artfs.fs.mountpoint import stale_message, stale_mount_above  # no FUSE in there: stays light

        stale = stale_mount_above(path)
        raise ArtfsError(stale_message(stale) if stale else f"{path} does not exist")
    try:
        sock = os.getxattr(path, CONTROL_XATTR).decode()
        name = os.getxattr(path, ARTIFACT_XATTR).decode()
    except OSError:
        raise ArtfsError(f"{path} is not a staging directory of an artfs mount") from None
    return sock, name


def request(path: str, op: str, params: dict | None = None, progress: Progress | None = None,
            timeout: float | None = None) -> dict:
    """Send one request about the staging directory `path`; returns the daemon's result."""
    sock_path, name = staging_target(path)
    message = {"op": op, "artifact": name, **(params or {})}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(sock_path)
        except OSError as e:
            raise ArtfsError(f"cannot reach the artfs daemon for {path} ({e.strerror})") from None
        s.sendall(json.dumps(message).encode() + b"\n")
        with s.makefile("rb") as replies:
            for line in replies:
                reply = json.loads(line)
                if "progress" in reply:
                    if progress:
                        progress(reply["progress"], reply.get("total", 0))
                    continue
                if reply.get("ok"):
                    return reply.get("result", {})
                conflicts = reply.get("conflicts")
                if conflicts:
                    raise SealConflict(reply.get("error") or "conflicting paths: " + ", ".join(conflicts), conflicts)
                raise ArtfsError(reply.get("error", "the daemon refused the request"))
    raise ArtfsError(f"the artfs daemon for {path} closed the connection without an answer")


def request_seal(path: str, message: str = "", aliases: list[str] | tuple[str, ...] = (),
                 type_: str | None = None, metadata: dict[str, str] | None = None, force: bool = False,
                 progress: Progress | None = None, wait: float | None = None, ttl: float | str | None = None) -> dict:
    """Publish the staging tree at `path` as the next version; returns the commit result. The daemon first
    waits up to `wait` seconds (its default: 30) for files still open for writing to be closed. `ttl`
    (seconds, or "30d"): the version is deleted that long after its creation (core/lifecycle.py)."""
    params: dict = {"message": message, "aliases": list(aliases), "type": type_, "metadata": metadata or {},
                    "force": force}
    if wait is not None:
        params["wait"] = wait
    if ttl is not None:
        from artfs.core.lifecycle import parse_ttl

        params["ttl"] = parse_ttl(ttl)
    return request(path, "seal", params, progress)


def request_status(path: str) -> dict:
    """`{"artifact", "base", "changes": [{"change": "added|modified|deleted", "path"}]}`."""
    return request(path, "status")


def request_discard(path: str) -> dict:
    """Drop the staged changes: staging becomes a fresh view of latest."""
    return request(path, "discard")


def staging_root_of(path: str) -> tuple[str, str]:
    """(the staging directory holding `path`, `path` relative to it): `path` need not exist yet, its
    nearest existing directory must be in a mount's staging tree."""
    path = os.path.abspath(path)
    here = path
    while True:
        if os.path.isdir(here):
            try:
                os.getxattr(here, CONTROL_XATTR)
                return here, os.path.relpath(path, here) if here != path else ""
            except OSError:
                pass
        up = os.path.dirname(here)
        if up == here:
            raise ArtfsError(f"{path} is not in the staging directory of an artfs mount")
        here = up


def request_ref_add(path: str, uri: str, checksum: bool = True, max_objects: int | None = None) -> dict:
    """Stage the object at `uri` as a reference at `path` in a mount's staging tree (a prefix: one file per
    object under `path` as a directory). The daemon pins it, reads and chunks it when `checksum` (this waits
    for that), and adds it at once; sealed as a reference entry. Returns
    `{"artifact", "uri", "files": [{"path", "size"}], "bytes"}` (paths relative to the staging directory)."""
    root, rel = staging_root_of(path)
    params: dict = {"path": rel, "uri": uri, "checksum": checksum}
    if max_objects is not None:
        params["max_objects"] = max_objects
    return request(root, "ref_add", params)
