"""The artfs CLI, and the FUSE mounts under test: artfs, rclone mount, s3fs.

Every mount registers its own undo with CLEANUP as soon as it is attempted: `artfs unmount` (artfs),
then `fusermount3 -u`, then `fusermount3 -uz`, then the daemon is stopped by its PID. An artfs mount is
started and stopped as the mount tests do it (tests/support/mounts.py), with the installed `artfs`. A mount
that fails to come up raises MountUnavailable with a one-line reason, which the tables print as n/a.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

from bench.common import CLEANUP, peak_rss_mib, run_cmd, timed, unmount
from tests.support.mounts import MountFailed, start_daemon, stop_daemon
from tests.support.processes import is_mounted, pid_alive, stop_pid


class MountUnavailable(RuntimeError):
    """This mount (or feature) cannot be measured on this machine/run; str(e) is the reason."""


def wait_mounted(path: str, pid: int | None, timeout: float, what: str, log_path: str | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_mounted(path):
            return
        if pid is not None and not pid_alive(pid):
            raise MountUnavailable(f"{what} exited before mounting{_log_tail(log_path)}")
        time.sleep(0.05)
    raise MountUnavailable(f"{what} did not mount within {timeout:.0f}s{_log_tail(log_path)}")


def _log_tail(log_path: str | None) -> str:
    if not log_path:
        return ""
    try:
        with open(log_path, errors="replace") as f:
            lines = [ln.strip() for ln in f if ln.strip()]
    except OSError:
        return ""
    return f": {lines[-1][:160]}" if lines else ""


# --- the artfs CLI ---


class Artfs:
    """Runs `artfs` commands with a given store and cache dir. `env` carries the S3 endpoint and keys."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        beside = os.path.join(os.path.dirname(sys.executable), "artfs")  # the venv's, when run without PATH
        self.exe = beside if os.access(beside, os.X_OK) else shutil.which("artfs", path=env.get("PATH")) or "artfs"
        self.help_text: dict[str, str] = {}

    def env_for(self, cache: str) -> dict[str, str]:
        """Each cache dir its own data dir too: staging areas left by an earlier run (same store URI on a
        new server port) must not show up in this one's mount."""
        return {**self.env, "ARTFS_CACHE": cache, "ARTFS_DATA": cache.rstrip("/") + "-data"}

    def cmd(self, args: list[str], cache: str, timeout: float = 3600) -> subprocess.CompletedProcess:
        return run_cmd([self.exe, *args], env=self.env_for(cache), timeout=timeout)

    def put(self, src: str, name: str, store: str, cache: str) -> tuple[float, dict]:
        out: list[subprocess.CompletedProcess] = []
        t = timed(lambda: out.append(self.cmd(["put", src, name, "--store", store, "--json"], cache)))
        return t, json.loads(out[0].stdout)

    def get(self, ref: str, dest: str, store: str, cache: str) -> tuple[float, dict]:
        out: list[subprocess.CompletedProcess] = []
        t = timed(lambda: out.append(self.cmd(["get", ref, dest, "--store", store, "--json"], cache)))
        return t, json.loads(out[0].stdout)

    def has_command(self, name: str) -> str | None:
        """None if `artfs NAME --help` works, else why not."""
        if name in self.help_text:
            return None
        proc = run_cmd([self.exe, name, "--help"], env=self.env, timeout=60, check=False)
        if proc.returncode == 0:
            self.help_text[name] = proc.stdout
            return None
        lines = [ln for ln in (proc.stderr or proc.stdout).strip().splitlines() if ln.strip()]
        why = lines[-1].strip().removeprefix("Error: ") if lines else f"exit status {proc.returncode}"
        return f"`artfs {name}`: {why}"

    def startup_seconds(self, store: str, cache: str, reps: int = 3) -> float:
        """Median wall time of `artfs ls` on an empty store: process start, imports, one listing."""
        times = sorted(timed(lambda: self.cmd(["ls", "--store", store, "--json"], cache)) for _ in range(reps))
        return times[len(times) // 2]


# --- mounts ---


class Mount:
    """A mounted filesystem at `path` served by process `pid` (when known). Use as a context manager."""

    what = "mount"

    def __init__(self, path: str) -> None:
        self.path = path
        self.pid: int | None = None
        self.log_path: str | None = None
        self._handle: int | None = None

    def __enter__(self) -> Mount:
        self._handle = CLEANUP.push(f"{self.what} at {self.path}", self.close)
        try:
            self.open()
        except BaseException:
            CLEANUP.release(self._handle)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            CLEANUP.release(self._handle)
            self._handle = None

    def open(self) -> None:
        raise NotImplementedError

    def peak_rss_mib(self) -> float | None:
        return peak_rss_mib(self.pid)

    def close(self) -> None:
        unmount(self.path)
        if self.pid is not None:
            stop_pid(self.pid)


class ArtfsMount(Mount):
    what = "artfs mount"

    def __init__(self, artfs: Artfs, path: str, store: str, cache: str, *args: str) -> None:
        super().__init__(path)
        self.artfs, self.store, self.cache = artfs, store, cache
        self.args = args  # more `artfs mount` options, e.g. ("--poll", "100ms")

    def open(self) -> None:
        self.log_path = os.path.join(self.cache, "mount.log")  # not in ~/.local/state
        try:
            self.pid = start_daemon(self.path, self.store, *self.args, cache_dir=self.cache, log=self.log_path,
                                    cmd=[self.artfs.exe], env=self.artfs.env_for(self.cache))
        except MountFailed as e:
            raise MountUnavailable(f"`artfs mount` failed: {e.reason}{_log_tail(self.log_path)}") from None
        except subprocess.TimeoutExpired:
            raise MountUnavailable("`artfs mount --daemon` did not return within 120s") from None
        wait_mounted(self.path, self.pid, 30, "artfs mount", self.log_path)

    def close(self) -> None:
        if self.pid is not None:
            stop_daemon(self.path, self.pid, cmd=[self.artfs.exe], env=self.artfs.env_for(self.cache), wait=10)
        super().close()


class RcloneMount(Mount):
    """`rclone mount` with an on-the-fly remote from environment variables; run in the foreground by us."""

    what = "rclone mount"

    def __init__(self, path: str, s3, prefix: str, cache_dir: str, cache_mode: str) -> None:
        super().__init__(path)
        self.s3, self.prefix, self.cache_dir, self.cache_mode = s3, prefix, cache_dir, cache_mode

    def open(self) -> None:
        exe = shutil.which("rclone")
        if exe is None:
            raise MountUnavailable("rclone not installed")
        env = {
            **self.s3.env,
            "RCLONE_CONFIG_BENCH_TYPE": "s3",
            "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
            "RCLONE_CONFIG_BENCH_ENDPOINT": self.s3.endpoint,
            "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": self.s3.creds["AWS_ACCESS_KEY_ID"],
            "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": self.s3.creds["AWS_SECRET_ACCESS_KEY"],
            "RCLONE_CONFIG_BENCH_REGION": self.s3.creds["AWS_DEFAULT_REGION"],
            "RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE": "true",
        }
        # rclone's AWS SDK refuses to start ("unsupported transport") when AWS_CA_BUNDLE is set; the
        # endpoint is plain http, so the bundle means nothing here.
        env.pop("AWS_CA_BUNDLE", None)
        self.log_path = os.path.join(self.cache_dir, "rclone.log")
        conf = os.path.join(self.cache_dir, "rclone.conf")
        open(conf, "w").close()
        from bench.s3peer import BUCKET

        args = [exe, "mount", f"bench:{BUCKET}/{self.prefix}", self.path, "--config", conf,
                "--vfs-cache-mode", self.cache_mode, "--cache-dir", os.path.join(self.cache_dir, "vfs"),
                "--log-file", self.log_path, "--log-level", "NOTICE"]
        proc = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        self.pid = proc.pid
        wait_mounted(self.path, self.pid, 30, "rclone mount", self.log_path)


class S3fsMount(Mount):
    """`s3fs bucket:/prefix MNT -f` with path-style requests; run in the foreground by us. No disk cache."""

    what = "s3fs"

    def __init__(self, path: str, s3, prefix: str, work_dir: str) -> None:
        super().__init__(path)
        self.s3, self.prefix, self.work_dir = s3, prefix.strip("/"), work_dir

    def open(self) -> None:
        exe = shutil.which("s3fs")
        if exe is None:
            raise MountUnavailable("s3fs not installed")
        from bench.s3peer import BUCKET

        passwd = os.path.join(self.work_dir, "s3fs.passwd")
        with open(os.open(passwd, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(f"{self.s3.creds['AWS_ACCESS_KEY_ID']}:{self.s3.creds['AWS_SECRET_ACCESS_KEY']}\n")
        self.log_path = os.path.join(self.work_dir, "s3fs.log")
        opts = f"url={self.s3.endpoint},use_path_request_style,passwd_file={passwd},endpoint=us-east-1"
        args = [exe, f"{BUCKET}:/{self.prefix}", self.path, "-f", "-o", opts]
        with open(self.log_path, "ab") as logf:
            proc = subprocess.Popen(args, env=self.s3.env, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
        self.pid = proc.pid
        wait_mounted(self.path, self.pid, 30, "s3fs", self.log_path)


class NullS3Mount(Mount):
    """bench/null_s3fs.py over one S3 object: the floor for a cold stream from S3 through FUSE."""

    what = "null fs over S3"

    def __init__(self, path: str, s3, key: str, work_dir: str, keep: str | None = None) -> None:
        super().__init__(path)
        self.s3, self.key, self.work_dir, self.keep = s3, key, work_dir, keep

    def open(self) -> None:
        from bench.s3peer import BUCKET

        self.log_path = os.path.join(self.work_dir, "null_s3fs.log")
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        args = [sys.executable, "-m", "bench.null_s3fs", self.path, f"s3://{BUCKET}/{self.key}"]
        if self.keep == "file":  # the local copy, in its work dir (removed with it)
            args += ["--keep", os.path.join(self.work_dir, "copy.bin")]
        elif self.keep == "lmdb":  # the copy as artfs's cache keeps it: digest-checked pieces in LMDB
            args += ["--keep-lmdb", os.path.join(self.work_dir, "copy.lmdb")]
        with open(self.log_path, "ab") as logf:
            proc = subprocess.Popen(args, env=self.s3.env, cwd=repo, stdin=subprocess.DEVNULL, stdout=logf,
                                    stderr=logf)
        self.pid = proc.pid
        wait_mounted(self.path, self.pid, 30, "null fs over S3", self.log_path)
        deadline = time.monotonic() + 30
        while "mounted " not in _read(self.log_path):  # its readahead is raised only then
            if time.monotonic() > deadline or not pid_alive(self.pid):
                raise MountUnavailable(f"null fs over S3 did not come up{_log_tail(self.log_path)}")
            time.sleep(0.05)


def _read(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""
