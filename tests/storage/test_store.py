"""The Store contract, checked on every implementation (directory and S3), plus the retry wrapper."""

from __future__ import annotations

import multiprocessing
import os
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator

import botocore.exceptions as bx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from artfs.errors import (
    InvalidName,
    StoreError,
    StoreNotFound,
    StoreUnavailable,
    TransientStoreError,
)
from artfs.settings import Settings
from artfs.storage import s3 as s3_module
from artfs.storage.local import LocalStore
from artfs.storage.open import open_store
from artfs.storage.retry import RetryingStore
from artfs.storage.s3 import S3Store, parse_s3_uri
from artfs.storage.store import Store
from tests.support.faults import FaultyStore
from tests.support.s3server import S3Server, s3_env


@pytest.fixture
def store(store_uri: str) -> Iterator[Store]:
    s = open_store(store_uri)
    yield s
    s.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the contract, on both stores ---


def test_put_get_overwrite(store: Store) -> None:
    store.put("a/b/c.bin", b"one")
    assert store.get("a/b/c.bin") == b"one"
    store.put("a/b/c.bin", b"two, longer")
    assert store.get("a/b/c.bin") == b"two, longer"
    store.put("empty", b"")
    assert store.get("empty") == b""


def test_get_range(store: Store) -> None:
    data = bytes(range(256)) * 40
    store.put("obj", data)
    assert store.get_range("obj", 0, 10) == data[:10]
    assert store.get_range("obj", 1000, 4096) == data[1000:5096]
    assert store.get_range("obj", len(data) - 7, 7) == data[-7:]  # exactly at the end
    assert store.get_range("obj", len(data) - 7, 100) == data[-7:]  # past the end: short, like pread
    assert store.get_range("obj", len(data), 10) == b""
    assert store.get_range("obj", 5, 0) == b""
    store.put("empty", b"")
    assert store.get_range("empty", 0, 0) == b""
    assert store.get_range("empty", 0, 10) == b""
    with pytest.raises(StoreNotFound):
        store.get_range("missing", 0, 0)  # zero length still checks that the object exists
    with pytest.raises(StoreNotFound):
        store.get_range("missing", 0, 10)


def test_put_file(store: Store, tmp_path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(300_000))
    store.put_file("packs/p1", src)
    assert store.get("packs/p1") == src.read_bytes()
    with pytest.raises(FileNotFoundError):  # a missing source is the caller's bug, not a missing key
        store.put_file("packs/p2", tmp_path / "nope")


def test_s3_put_file_multipart(s3_store_uri: str, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3_module, "SINGLE_PUT_LIMIT", 6 << 20)
    monkeypatch.setattr(s3_module, "PART_SIZE", 5 << 20)  # S3's smallest part
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(12 << 20))
    store = open_store(s3_store_uri)
    store.put_file("packs/big", src)
    assert store.get("packs/big") == src.read_bytes()
    assert store.get_range("packs/big", (11 << 20) + 5, 10) == src.read_bytes()[(11 << 20) + 5 :][:10]


def test_create_if_absent(store: Store) -> None:
    assert store.create_if_absent("versions/0001", b"mine") is True
    assert store.create_if_absent("versions/0001", b"theirs") is False
    assert store.get("versions/0001") == b"mine"
    store.put("versions/0002", b"x")
    assert store.create_if_absent("versions/0002", b"y") is False


def test_create_if_absent_race_threads(store: Store) -> None:
    for trial in range(3):
        key = f"versions/{trial:04d}"
        barrier = threading.Barrier(8)
        results: dict[int, bool] = {}

        def claim(i: int, key: str, barrier: threading.Barrier, results: dict[int, bool]) -> None:
            payload = f"writer {i}".encode() * 1000
            barrier.wait()
            results[i] = store.create_if_absent(key, payload)

        threads = [threading.Thread(target=claim, args=(i, key, barrier, results)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [i for i, won in results.items() if won]
        assert len(results) == 8 and len(winners) == 1
        assert store.get(key) == f"writer {winners[0]}".encode() * 1000


def _claim_in_process(uri: str, key: str, i: int, barrier, results) -> None:
    store = open_store(uri)
    barrier.wait()
    results.put((i, store.create_if_absent(key, f"process {i}".encode())))


def test_create_if_absent_race_processes(store_uri: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_claim_in_process, args=(store_uri, "claim", i, barrier, results)) for i in range(4)]
    for p in procs:
        p.start()
    outcome = dict(results.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    winners = [i for i, won in outcome.items() if won]
    assert len(winners) == 1
    assert open_store(store_uri).get("claim") == f"process {winners[0]}".encode()


KEYS = ["a-c", "a/b", "a/c/d", "a0", "ab/c", "abc", "b", "versions/0000000002.json", "versions/0000000010.json"]


def test_list(store: Store) -> None:
    for k in KEYS:
        store.put(k, k.encode())
    assert list(store.list("")) == sorted(KEYS)
    assert list(store.list("a")) == ["a-c", "a/b", "a/c/d", "a0", "ab/c", "abc"]
    assert list(store.list("a/")) == ["a/b", "a/c/d"]
    assert list(store.list("ab")) == ["ab/c", "abc"]  # a prefix ending mid-name
    assert list(store.list("versions/00000000")) == ["versions/0000000002.json", "versions/0000000010.json"]
    assert list(store.list("a/c/d")) == ["a/c/d"]
    assert list(store.list("zzz")) == []
    assert list(store.list("nope/deeper/")) == []


def test_list_never_shows_temp_files(local_store_uri: str) -> None:
    store = LocalStore(local_store_uri)
    store.put("d/real", b"1")
    with open(os.path.join(local_store_uri, "d", ".tmp-crashed"), "wb") as f:  # a writer died mid-put
        f.write(b"partial")
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            store.put(f"d/k{i % 5}", os.urandom(100_000))
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        for _ in range(200):
            assert all(".tmp-" not in k for k in store.list("d/"))
    finally:
        stop.set()
        t.join()
    assert "d/real" in list(store.list("d"))


def test_delete(store: Store) -> None:
    store.put("x/y", b"1")
    assert store.exists("x/y")
    store.delete("x/y")
    assert not store.exists("x/y")
    store.delete("x/y")  # missing: not an error
    store.delete("never/was")
    assert list(store.list("x")) == []


def test_missing_key(store: Store) -> None:
    with pytest.raises(StoreNotFound) as exc:
        store.get("artifacts/none/here.json")
    message = str(exc.value)
    assert "artifacts/none/here.json" in message and "\n" not in message


# --- the directory store ---


def test_local_root_created_on_first_write(tmp_path) -> None:
    root = tmp_path / "deep" / "er" / "store"
    store = LocalStore(str(root))
    assert list(store.list("")) == []
    with pytest.raises(StoreNotFound):
        store.get("k")
    assert not root.exists()
    store.put("k", b"v")
    assert root.is_dir() and store.get("k") == b"v"


def test_local_root_not_a_directory(tmp_path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreUnavailable, match="not a directory"):
        LocalStore(str(tmp_path / "file"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_local_root_not_writable(tmp_path) -> None:
    root = tmp_path / "ro"
    root.mkdir()
    root.chmod(0o555)
    try:
        with pytest.raises(StoreUnavailable, match="not writable"):
            LocalStore(str(root)).put("k", b"v")
    finally:
        root.chmod(0o755)


def test_local_permission_error_is_unavailable(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The real check above is skipped as root, so this one fakes the failure the kernel would report.
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("artfs.storage.local.tempfile.mkstemp", refuse)
    with pytest.raises(StoreUnavailable, match=r"store directory .* is not writable"):
        LocalStore(str(tmp_path)).put("k", b"v")


@pytest.mark.parametrize("key", ["", "/abs", "../escape", "a/../../b", "a//b", "a/./b", ".tmp-x", "d/.tmp-y"])
def test_local_rejects_bad_keys(tmp_path, key: str) -> None:
    with pytest.raises(InvalidName):
        LocalStore(str(tmp_path)).put(key, b"v")


_names = st.text(alphabet="ab-0.", min_size=1, max_size=3).filter(lambda n: n not in (".", ".."))


@settings(max_examples=60, deadline=None)
@given(
    keys=st.lists(st.lists(_names, min_size=1, max_size=3).map("/".join), max_size=12, unique=True),
    prefix=st.text(alphabet="ab-0./", max_size=5),
)
def test_local_list_matches_sorted_model(keys: list[str], prefix: str) -> None:
    # A key cannot also be a directory of other keys in a directory store: drop such clashes.
    keys = [k for k in keys if not any(other.startswith(k + "/") for other in keys)]
    parts = prefix.split("/")[:-1]
    if any(p in ("", ".", "..") for p in parts):
        return
    with tempfile.TemporaryDirectory() as root:
        store = LocalStore(root)
        for k in keys:
            store.put(k, b"")
        assert list(store.list(prefix)) == sorted(k for k in keys if k.startswith(prefix))


# --- the S3 store ---


def test_parse_s3_uri() -> None:
    assert parse_s3_uri("s3://b/p/q") == ("b", "p/q/")
    assert parse_s3_uri("s3://b/p/q/") == ("b", "p/q/")
    assert parse_s3_uri("s3://b") == ("b", "")
    assert parse_s3_uri("s3://b/") == ("b", "")
    with pytest.raises(InvalidName):
        parse_s3_uri("s3:///p")


def test_s3_prefixes_are_isolated(s3_store_uri: str) -> None:
    bucket_uri = s3_store_uri.rsplit("/", 1)[0]
    one, two = open_store(bucket_uri + "/one"), open_store(bucket_uri + "/two")
    one.put("k", b"1")
    two.put("k", b"2")
    assert one.get("k") == b"1" and list(one.list("")) == ["k"]
    assert sorted(open_store(bucket_uri).list("")) == ["one/k", "two/k"]


def test_s3_missing_bucket(s3_server: S3Server) -> None:
    store = open_store("s3://no-such-bucket-here/p")
    for op in (lambda: store.get("k"), lambda: store.put("k", b"v"), lambda: list(store.list(""))):
        with pytest.raises(StoreUnavailable, match="bucket 'no-such-bucket-here' does not exist"):
            op()


def test_s3_unreachable_endpoint_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    for name, value in s3_env(endpoint).items():
        monkeypatch.setenv(name, value)
    store = open_store("s3://bucket/p", retries=3, deadline=1)
    start = time.monotonic()
    with pytest.raises(StoreUnavailable) as exc:
        store.get("k")
    assert time.monotonic() - start < 5
    message = str(exc.value)
    assert "unreachable after" in message and f"cannot reach {endpoint}" in message and "\n" not in message


def test_s3_missing_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("AWS_") and name != "AWS_DEFAULT_REGION":
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    store = open_store("s3://bucket/p", endpoint_url=f"http://127.0.0.1:{_closed_port()}")
    start = time.monotonic()
    with pytest.raises(StoreUnavailable, match="no AWS credentials found: set AWS_ACCESS_KEY_ID"):
        store.get("k")
    assert time.monotonic() - start < 5


def _client_error(code: str, status: int) -> bx.ClientError:
    return bx.ClientError(
        {"Error": {"Code": code, "Message": f"{code}\nhappened"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "GetObject",
    )


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (_client_error("NoSuchKey", 404), StoreNotFound),
        (_client_error("404", 404), StoreNotFound),
        (_client_error("NoSuchBucket", 404), StoreUnavailable),
        (_client_error("AccessDenied", 403), StoreUnavailable),
        (_client_error("InvalidAccessKeyId", 403), StoreUnavailable),
        (_client_error("SignatureDoesNotMatch", 403), StoreUnavailable),
        (_client_error("SlowDown", 503), TransientStoreError),
        (_client_error("InternalError", 500), TransientStoreError),
        (_client_error("RequestTimeout", 400), TransientStoreError),
        (_client_error("ConditionalRequestConflict", 409), TransientStoreError),
        (_client_error("InvalidArgument", 400), StoreError),
        (bx.NoCredentialsError(), StoreUnavailable),
        (bx.EndpointConnectionError(endpoint_url="http://x"), TransientStoreError),
        (bx.ReadTimeoutError(endpoint_url="http://x"), TransientStoreError),
        (bx.ConnectionClosedError(endpoint_url="http://x"), TransientStoreError),
    ],
)
def test_s3_error_translation(error: Exception, expected: type) -> None:
    store = S3Store("s3://bucket/p", endpoint_url="http://127.0.0.1:9")
    translated = store._translate(error, "some/key")
    assert type(translated) is expected
    assert "\n" not in str(translated)


# --- the retry wrapper ---


def _retrying(inner: Store, **kw) -> RetryingStore:
    return RetryingStore(inner, base_delay=0.001, max_delay=0.01, **kw)


def test_retry_then_succeed(tmp_path) -> None:
    inner = FaultyStore(LocalStore(str(tmp_path)), fail_first=3)
    inner.put("k", b"v")
    store = _retrying(inner)
    assert store.get("k") == b"v"
    assert inner.calls == 4
    assert store.inner is inner and store.uri == inner.uri


def test_retry_gives_up(tmp_path) -> None:
    inner = FaultyStore(LocalStore(str(tmp_path)), fail_first=100)
    with pytest.raises(StoreUnavailable, match=r"unreachable after 4 attempts: flaky failure 4"):
        _retrying(inner, attempts=4).get("k")
    assert inner.calls == 4


def test_retry_deadline(tmp_path) -> None:
    inner = FaultyStore(LocalStore(str(tmp_path)), fail_first=10**6)
    store = RetryingStore(inner, attempts=10**6, base_delay=0.05, max_delay=0.05, deadline=0.3)
    start = time.monotonic()
    with pytest.raises(StoreUnavailable):
        store.get("k")
    assert time.monotonic() - start < 1.0


def test_retry_settings_reach_the_store(tmp_path) -> None:
    s = Settings.from_env({"ARTFS_STORE_RETRIES": "2", "ARTFS_STORE_DEADLINE": "0.5"})
    store = open_store(str(tmp_path), retries=s.store_retries, deadline=s.store_deadline)
    assert (store.attempts, store.deadline) == (2, 0.5)
    store = _retrying(FaultyStore(LocalStore(str(tmp_path)), fail_first=100), attempts=s.store_retries,
                      deadline=s.store_deadline)
    with pytest.raises(StoreUnavailable, match="after 2 attempts"):
        store.get("k")


def test_non_transient_errors_pass_through(tmp_path) -> None:
    inner = FaultyStore(LocalStore(str(tmp_path)), fail_first=100, error=StoreUnavailable("denied"))
    with pytest.raises(StoreUnavailable, match="^denied$"):
        _retrying(inner).get("k")
    assert inner.calls == 1
    with pytest.raises(StoreNotFound):
        _retrying(FaultyStore(LocalStore(str(tmp_path)), fail_first=0)).get("missing")


def test_retry_list(tmp_path) -> None:
    inner = FaultyStore(LocalStore(str(tmp_path)), fail_first=2)
    inner.put("a/1", b"")
    assert list(_retrying(inner).list("a/")) == ["a/1"]


def test_retry_create_if_absent_finds_its_own_write(tmp_path) -> None:
    inner = FaultyStore(LocalStore(str(tmp_path)), fail_first=2, land=True)
    assert _retrying(inner).create_if_absent("claim", b"ours") is True
    assert inner.get("claim") == b"ours"


def test_retry_create_if_absent_loses_to_another_writer(tmp_path) -> None:
    inner = FaultyStore(LocalStore(str(tmp_path)), fail_first=2)
    LocalStore(str(tmp_path)).put("claim", b"theirs")
    assert _retrying(inner).create_if_absent("claim", b"ours") is False


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_directory_store_files_respect_the_umask(tmp_path, umask: int) -> None:
    """A directory store shared by a group (umask 002) stays readable and writable to the group."""
    code = ("import os, sys; os.umask(int(sys.argv[2], 8)); from artfs.storage.local import LocalStore; "
            "s = LocalStore(sys.argv[1]); s.put('packs/ab/x', b'1'); s.create_if_absent('artifacts/a/r', b'2'); "
            "s.put_file('manifests/cd/y', sys.argv[3])")
    src = tmp_path / "src"
    src.write_bytes(b"m")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "store"), oct(umask)[2:], str(src)], check=True)
    for key in ("packs/ab/x", "artifacts/a/r", "manifests/cd/y"):
        assert stat.S_IMODE(os.stat(tmp_path / "store" / key).st_mode) == 0o666 & ~umask, key
