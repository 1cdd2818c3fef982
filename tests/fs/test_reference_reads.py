"""References through a real mount: referenced files (file://, s3:// versioned and not, http://) read like any
file — sha256sum equals the source's, random 4 KiB preads too — and once a source is overwritten, a cold
mount answers EIO (with a log line naming the URI and the pin), never the new bytes; a pinned S3 VersionId
still reads the old bytes."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import subprocess
import uuid

import pytest

from tests.support.cli import run_artfs, seal
from tests.support.trees import write_tree

MiB = 1 << 20


def _sha256sum(path) -> str:
    return subprocess.run(["sha256sum", str(path)], check=True, capture_output=True, text=True).stdout.split()[0]


def _pread(path, off: int, size: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, size, off)
    finally:
        os.close(fd)


def test_referenced_files_read_through_the_mount_and_fail_with_eio_once_changed(
        mount_artfs, local_store_uri, s3_server, http_server, tmp_path) -> None:
    rng = random.Random(11)
    files = {"big.bin": rng.randbytes(6 * MiB + 3), "small.txt": b"small\n", "empty": b""}
    write_tree(tmp_path / "raw", files)
    write_tree(tmp_path / "www", {"page.bin": rng.randbytes(MiB)})
    http = http_server(tmp_path / "www")
    client = s3_server.client()
    plain, versioned = (s3_server.create_bucket(f"other-{uuid.uuid4().hex[:10]}") for _ in range(2))
    client.put_bucket_versioning(Bucket=versioned, VersioningConfiguration={"Status": "Enabled"})
    s3_bytes = rng.randbytes(3 * MiB)
    for bucket in (plain, versioned):
        client.put_object(Bucket=bucket, Key="obj.bin", Body=s3_bytes)
    run_artfs("put", "refs", "--store", local_store_uri,
              "--ref", f"raw=file://{tmp_path}/raw/", "--ref", f"s3/plain.bin=s3://{plain}/obj.bin",
              "--ref", f"s3/versioned.bin=s3://{versioned}/obj.bin", "--ref", f"{http.url}/page.bin")
    sources = {"raw/big.bin": files["big.bin"], "raw/small.txt": files["small.txt"], "raw/empty": b"",
               "s3/plain.bin": s3_bytes, "s3/versioned.bin": s3_bytes,
               "page.bin": (tmp_path / "www/page.bin").read_bytes()}

    m = mount_artfs(local_store_uri)
    root = m.path / "refs" / "v0"
    for path, data in sources.items():
        assert os.stat(root / path).st_size == len(data)
        assert _sha256sum(root / path) == hashlib.sha256(data).hexdigest(), path
    assert os.getxattr(root / "s3/plain.bin", "user.artfs.source") == f"s3://{plain}/obj.bin".encode()
    assert b"VersionId" in os.getxattr(root / "s3/versioned.bin", "user.artfs.pin")
    for off in (0, 4 * MiB - 100, 6 * MiB - 4000):
        assert _pread(root / "raw/big.bin", off, 4096) == files["big.bin"][off : off + 4096]

    # Staging: a referenced file written to is copied up and sealed as content; the others stay references.
    staged = m.path / "refs" / "staging"
    with open(staged / "raw" / "small.txt", "r+b") as f:
        f.seek(0)
        f.write(b"SMALL")
    assert (staged / "raw" / "small.txt").read_bytes() == b"SMALL\n"
    assert seal(staged)["ref"] == "refs:v1"
    items = {i["path"]: i for i in json.loads(run_artfs("files", "refs:v1", "--json", "--store",
                                                          local_store_uri).stdout)}
    assert "reference" not in items["raw/small.txt"] and items["raw/big.bin"]["reference"]["checksum"]
    assert items["s3/versioned.bin"]["reference"]["uri"] == f"s3://{versioned}/obj.bin"

    # Overwrite every source (same sizes), then read from a mount with a cold cache.
    big = tmp_path / "raw" / "big.bin"
    big.write_bytes(bytes(len(files["big.bin"])))
    for bucket in (plain, versioned):
        client.put_object(Bucket=bucket, Key="obj.bin", Body=bytes(len(s3_bytes)))
    page = tmp_path / "www" / "page.bin"
    page.write_bytes(bytes(MiB))
    cold = mount_artfs(local_store_uri)
    cold.expected_errors = [r"read of refs:v0/\S+ at \d+ failed: referenced object \S+ (changed|is gone)"]
    root = cold.path / "refs" / "v0"
    for path, off in [("raw/big.bin", 5 * MiB), ("s3/plain.bin", 2 * MiB), ("page.bin", 4096)]:
        with pytest.raises(OSError) as e:
            _pread(root / path, off, 4096)
        assert e.value.errno == errno.EIO, path
    assert _sha256sum(root / "s3/versioned.bin") == hashlib.sha256(s3_bytes).hexdigest()  # VersionId pinned
    assert _pread(root / "raw/small.txt", 0, 100) == files["small.txt"]  # untouched sources still read
    log = cold.log_text()
    assert f"referenced object file://{tmp_path}/raw/big.bin changed" in log and "pinned: mtime_ns" in log
    assert f"s3://{plain}/obj.bin changed" in log and "ETag" in log
