"""Every environment variable artfs reads, read here, once, at the edge (the CLI, the Python API, the mount
daemon's start) and passed down as plain configuration: storage and core never read `os.environ`.

    ARTFS_STORE           the store URI when --store is not given (default: <data>/store, a directory)
    ARTFS_CACHE           the cache directory, disposable (default: $XDG_CACHE_HOME/artfs, ~/.cache/artfs)
    ARTFS_DATA            the data directory: staged changes, the default store (default:
                          $XDG_DATA_HOME/artfs, ~/.local/share/artfs)
    ARTFS_CACHE_SIZE      the chunk cache's bound, e.g. 20G (default: the bound last given, else 20G)
    ARTFS_MEMORY_CACHE    decoded chunks a mount daemon keeps in memory, e.g. 128M (default 128M)
    ARTFS_STORE_RETRIES   attempts per store request (default 5)
    ARTFS_STORE_DEADLINE  seconds a store request may keep retrying (default 25)
    ARTFS_LOG_LEVEL       a mount daemon's log level: DEBUG, INFO, WARNING, ERROR (default INFO)
    ARTFS_READ_AHEAD_KB   the kernel readahead a mount asks for, in KiB (default 1024)
    ARTFS_RUN_ID          the run this process belongs to, set by `artfs run` for its command (core/runs.py)
    ARTFS_RUN_HEARTBEAT   seconds between a run's heartbeats (default 10); silent for 3 of them: crashed
    XDG_CACHE_HOME, XDG_DATA_HOME, XDG_STATE_HOME, XDG_RUNTIME_DIR   the usual base directories

Where the directories are used, and which of them are disposable: core/places.py. The AWS configuration
chain (credentials, region, AWS_ENDPOINT_URL) is boto3's, read by the S3 store as boto3 reads it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

from artfs.core.places import Places
from artfs.errors import ArtfsError

if TYPE_CHECKING:
    from artfs.core.repo import Repo

_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(?:([KMGT])(?:i?B)?|B)?", re.IGNORECASE)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def parse_size(text: str) -> int:
    """Bytes in "20G", "512M", "1.5GiB", "100000" (K/M/G/T are powers of 1024, like `du -h`)."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise ArtfsError(f"invalid size {text!r}: expected a number of bytes or one like 512M, 20G, 1.5GiB")
    number, unit = match.groups()
    scale = 1 << 10 * ("KMGT".index(unit.upper()) + 1) if unit else 1
    return int(Fraction(number) * scale)


@dataclass(frozen=True)
class Settings:
    """What the environment says; None where it says nothing (the component's own default applies)."""

    places: Places
    store_uri: str
    cache_size: int | None = None
    memory_cache: int | None = None
    store_retries: int | None = None
    store_deadline: float | None = None
    log_level: str = "INFO"
    read_ahead_kb: int = 1024
    test_seal_gate: str | None = None  # ARTFS_TEST_SEAL_GATE: see fs/control_server.py (tests only)
    run_id: str | None = None  # ARTFS_RUN_ID: inside `artfs run`, the run's id
    run_heartbeat: float | None = None  # ARTFS_RUN_HEARTBEAT

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and check every variable; a bad value is one clear ArtfsError naming the variable."""
        env = os.environ if env is None else env
        home = os.path.expanduser("~")

        def base(var: str, *fallback: str) -> str:
            value = env.get(var, "")
            return value if os.path.isabs(value) else os.path.join(home, *fallback)  # XDG: ignore relative

        def explicit(var: str, default: str) -> str:
            value = env.get(var)
            return os.path.abspath(os.path.expanduser(value)) if value else default

        runtime = env.get("XDG_RUNTIME_DIR", "")
        places = Places(
            cache=explicit("ARTFS_CACHE", os.path.join(base("XDG_CACHE_HOME", ".cache"), "artfs")),
            data=explicit("ARTFS_DATA", os.path.join(base("XDG_DATA_HOME", ".local", "share"), "artfs")),
            state=os.path.join(base("XDG_STATE_HOME", ".local", "state"), "artfs"),
            runtime=os.path.join(runtime, "artfs") if os.path.isabs(runtime) else "",
        )
        level = env.get("ARTFS_LOG_LEVEL", "INFO").upper()
        if level not in LOG_LEVELS:
            raise ArtfsError(f"ARTFS_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, not {level!r}")
        return cls(
            places=places,
            store_uri=env.get("ARTFS_STORE") or places.default_store(),
            cache_size=_size(env, "ARTFS_CACHE_SIZE"),
            memory_cache=_size(env, "ARTFS_MEMORY_CACHE"),
            store_retries=_number(env, "ARTFS_STORE_RETRIES", int, 1),
            store_deadline=_number(env, "ARTFS_STORE_DEADLINE", float, 0),
            log_level=level,
            read_ahead_kb=_read_ahead_kb(env),
            test_seal_gate=env.get("ARTFS_TEST_SEAL_GATE") or None,
            run_id=_run_id(env),
            run_heartbeat=_number(env, "ARTFS_RUN_HEARTBEAT", float, 0.01),
        )


    def open_repo(self, store_uri: str | None = None, endpoint_url: str | None = None,
                  cache_size: int | None = None, create: bool = False,
                  on_retry: Callable[[str, float], None] | None = None) -> Repo:
        """The Repo of a store (default: the settings' store), in the settings' places, with their retry
        policy and cache bound (an explicit `cache_size` wins). The caller closes it.

        A store that is not there is an error (a mistyped store is not an empty one) unless `create` (a
        put may make a new directory store) or it is the embedded default, made on first use."""
        from artfs.core.repo import Repo
        from artfs.storage.open import open_store

        uri = store_uri or self.store_uri
        store = open_store(uri, endpoint_url=endpoint_url, retries=self.store_retries,
                           deadline=self.store_deadline, on_retry=on_retry, scratch=self.places.client_data())
        try:
            if not create and os.path.abspath(os.path.expanduser(uri)) != self.places.default_store():
                store.check()
            return Repo(store, self.places, cache_size=self.cache_size if cache_size is None else cache_size)
        except BaseException:
            store.close()
            raise


def _size(env: Mapping[str, str], name: str) -> int | None:
    text = env.get(name)
    if not text:
        return None
    try:
        return parse_size(text)
    except ArtfsError as e:
        raise ArtfsError(f"{name}: {e}") from None


def _run_id(env: Mapping[str, str]) -> str | None:
    from artfs.core.runs import RUN_ENV, check_run_id

    value = env.get(RUN_ENV)
    if not value:
        return None
    try:
        return check_run_id(value)
    except ArtfsError as e:
        raise ArtfsError(f"{RUN_ENV}: {e}") from None


def _read_ahead_kb(env: Mapping[str, str]) -> int:
    """0 means: leave the kernel's readahead alone."""
    text = env.get("ARTFS_READ_AHEAD_KB", "1024")
    if not text.isdigit():
        raise ArtfsError(f"ARTFS_READ_AHEAD_KB must be a number of KiB, not {text!r}")
    return int(text)


def _number(env: Mapping[str, str], name: str, kind: type, minimum: float):
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = kind(raw)
    except ValueError:
        raise ArtfsError(f"{name} must be a number >= {minimum}, got {raw!r}") from None
    if value < minimum:
        raise ArtfsError(f"{name} must be a number >= {minimum}, got {raw!r}")
    return value
