"""Settings: every environment variable read in one place, checked, with the documented defaults."""

from __future__ import annotations

import os

import pytest

from artfs.errors import ArtfsError
from artfs.settings import Settings, parse_size

MiB = 1 << 20


def test_directories_follow_artfs_and_xdg_variables(tmp_path) -> None:
    env = {"ARTFS_CACHE": str(tmp_path / "explicit"), "ARTFS_DATA": str(tmp_path / "data")}
    places = Settings.from_env(env).places
    assert places.cache == str(tmp_path / "explicit")
    assert places.data == str(tmp_path / "data")
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg"), "XDG_DATA_HOME": str(tmp_path / "share"),
           "XDG_STATE_HOME": str(tmp_path / "state"), "XDG_RUNTIME_DIR": str(tmp_path / "run")}
    s = Settings.from_env(env)
    assert s.places.cache == str(tmp_path / "xdg" / "artfs")
    assert s.places.data == str(tmp_path / "share" / "artfs")
    assert s.places.state == str(tmp_path / "state" / "artfs")
    assert s.places.runtime == str(tmp_path / "run" / "artfs")
    assert s.store_uri == str(tmp_path / "share" / "artfs" / "store")  # the default store, beside staged data


def test_relative_xdg_paths_are_ignored(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    s = Settings.from_env({"XDG_CACHE_HOME": "relative", "XDG_DATA_HOME": "rel", "XDG_RUNTIME_DIR": "r"})
    assert s.places.cache == str(tmp_path / "home" / ".cache" / "artfs")
    assert s.places.data == str(tmp_path / "home" / ".local" / "share" / "artfs")
    assert s.places.runtime == ""


def test_explicit_store_wins() -> None:
    assert Settings.from_env({"ARTFS_STORE": "s3://bucket/p"}).store_uri == "s3://bucket/p"


def test_cache_size_reaches_the_cache(tmp_path) -> None:
    for env, expected in (({"ARTFS_CACHE_SIZE": "8M"}, 8 * MiB), ({}, 20 << 30)):
        cache = str(tmp_path / f"cache-{expected}")  # a cache keeps the last bound given (storage/cache.py)
        s = Settings.from_env({**env, "ARTFS_CACHE": cache, "ARTFS_DATA": str(tmp_path / "d")})
        repo = s.open_repo(str(tmp_path / "store"), create=True)
        try:
            assert repo.cache.max_bytes == expected
        finally:
            repo.close()
    with pytest.raises(ArtfsError, match="ARTFS_CACHE_SIZE"):
        Settings.from_env({"ARTFS_CACHE_SIZE": "lots"})


def test_store_retry_overrides() -> None:
    s = Settings.from_env({"ARTFS_STORE_RETRIES": "2", "ARTFS_STORE_DEADLINE": "0.5"})
    assert (s.store_retries, s.store_deadline) == (2, 0.5)
    for name, bad in (("ARTFS_STORE_RETRIES", "0"), ("ARTFS_STORE_RETRIES", "x"), ("ARTFS_STORE_DEADLINE", "-1")):
        with pytest.raises(ArtfsError, match=name):
            Settings.from_env({name: bad})


@pytest.mark.parametrize(("name", "bad"), [("ARTFS_LOG_LEVEL", "loud"), ("ARTFS_READ_AHEAD_KB", "1M"),
                                          ("ARTFS_MEMORY_CACHE", "much")])
def test_bad_values_name_their_variable(name: str, bad: str) -> None:
    with pytest.raises(ArtfsError, match=name) as exc:
        Settings.from_env({name: bad})
    assert "\n" not in str(exc.value)


def test_defaults() -> None:
    s = Settings.from_env({"HOME": os.path.expanduser("~")})
    assert (s.log_level, s.read_ahead_kb, s.memory_cache, s.test_seal_gate) == ("INFO", 1024, None, None)
    assert Settings.from_env({"ARTFS_READ_AHEAD_KB": "0"}).read_ahead_kb == 0  # leave the kernel's alone


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20G", 20 << 30),
        ("512M", 512 << 20),
        ("1.5GiB", 3 << 29),
        ("100000", 100000),
        ("4k", 4096),
        ("2 TB", 2 << 40),
        (" 7KiB ", 7168),
        ("10B", 10),
        ("0", 0),
    ],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "G", "-1G", "1X", "1GiBs", "ten", "1e9", "1.2.3M"])
def test_parse_size_rejects(text):
    with pytest.raises(ArtfsError) as info:
        parse_size(text)
    assert "\n" not in str(info.value) and repr(text) in str(info.value)
