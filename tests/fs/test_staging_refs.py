"""`artfs ref add` in a real mount's staging: a file:// object, an s3:// object and a file:// prefix staged as
references show at once as regular files of the right size, read byte-exact through staging, seal as
references (`artfs files` says so, `artfs get` is byte-exact), a write copies one up into ordinary content,
and bad input fails with one line, adding nothing."""

from __future__ import annotations

import json
import os
import random
import uuid

from tests.support.cli import run_artfs, seal
from tests.support.trees import write_tree

MiB = 1 << 20


def _ref_add(*args: str, check: bool = True):
    return run_artfs("ref", "add", *args, check=check)


def test_ref_add_stages_references_that_read_and_seal_as_references(
        mount_artfs, small_store, s3_server, tmp_path) -> None:
    store_uri, _ = small_store
    rng = random.Random(7)
    files = {"big.bin": rng.randbytes(5 * MiB + 11), "a b/ü.txt": b"unicode\n", "empty": b""}
    write_tree(tmp_path / "raw", files)
    bucket = s3_server.create_bucket(f"other-{uuid.uuid4().hex[:10]}")
    s3_bytes = rng.randbytes(2 * MiB + 5)
    s3_server.client().put_object(Bucket=bucket, Key="obj.bin", Body=s3_bytes)

    m = mount_artfs(store_uri)
    staged = m.path / "animals" / "staging"
    assert (staged / "images" / "cat.png").exists()  # a base directory exists: a reference goes in beside
    _ref_add(str(staged / "images" / "big.bin"), f"file://{tmp_path}/raw/big.bin")
    out = json.loads(_ref_add(str(staged / "s3" / "obj.bin"), f"s3://{bucket}/obj.bin", "--json").stdout)
    assert out["files"] == [{"path": "s3/obj.bin", "size": len(s3_bytes)}]
    _ref_add(str(staged / "raw"), f"file://{tmp_path}/raw/", "--no-checksum")

    # At once: regular files of the right size, read byte-exact through staging (a 4 KiB pread too).
    expect = {"images/big.bin": files["big.bin"], "s3/obj.bin": s3_bytes,
              **{f"raw/{p}": data for p, data in files.items()}}
    for path, data in expect.items():
        st = os.stat(staged / path)
        assert st.st_size == len(data) and os.path.isfile(staged / path), path
        assert (staged / path).read_bytes() == data, path
    fd = os.open(staged / "images" / "big.bin", os.O_RDONLY)
    try:
        assert os.pread(fd, 4096, 3 * MiB + 1) == files["big.bin"][3 * MiB + 1 : 3 * MiB + 4097]
    finally:
        os.close(fd)
    status = json.loads(run_artfs("status", str(staged), "--json").stdout)
    assert {c["path"] for c in status["changes"]} >= set(expect)

    # A write copies a reference up: it becomes ordinary staged content.
    with open(staged / "raw" / "a b" / "ü.txt", "r+b") as f:
        f.write(b"UNI")
    assert (staged / "raw" / "a b" / "ü.txt").read_bytes() == b"UNIcode\n"

    assert seal(staged, "-m", "refs")["ref"] == "animals:v1"
    items = {i["path"]: i for i in json.loads(run_artfs("files", "animals:v1", "--json", "--store",
                                                          store_uri).stdout)}
    assert items["images/big.bin"]["reference"]["uri"] == f"file://{tmp_path}/raw/big.bin"
    assert items["images/big.bin"]["reference"]["checksum"]
    assert items["s3/obj.bin"]["reference"]["uri"] == f"s3://{bucket}/obj.bin"
    assert not items["raw/big.bin"]["reference"]["checksum"]
    assert "reference" in items["raw/empty"]
    assert "reference" not in items["raw/a b/ü.txt"] and "reference" not in items["images/cat.png"]
    dest = tmp_path / "got"
    run_artfs("get", "animals:v1", str(dest), "--store", store_uri)
    for path, data in {**expect, "raw/a b/ü.txt": b"UNIcode\n"}.items():
        assert (dest / path).read_bytes() == data, path
    assert (m.path / "animals" / "v1" / "s3" / "obj.bin").read_bytes() == s3_bytes
    info = run_artfs("info", str(m.path / "animals" / "v1" / "s3" / "obj.bin")).stdout
    assert f"is a reference to s3://{bucket}/obj.bin (pinned: " in info


def test_ref_add_in_a_new_artifact_and_bad_input(mount_artfs, small_store, s3_server, tmp_path) -> None:
    local_store_uri, _ = small_store
    write_tree(tmp_path / "raw", {"x.bin": b"x" * 1000, "y.bin": b"y" * 10})
    m = mount_artfs(local_store_uri)
    os.mkdir(m.path / "fresh")
    staged = m.path / "fresh" / "staging"
    _ref_add(str(staged / "d" / "x.bin"), f"file://{tmp_path}/raw/x.bin")
    assert (staged / "d" / "x.bin").read_bytes() == b"x" * 1000

    def fails(*args: str, says: str) -> None:
        res = _ref_add(*args, check=False)
        assert res.returncode != 0 and says in res.stderr and "Traceback" not in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr

    fails(str(tmp_path / "elsewhere.bin"), f"file://{tmp_path}/raw/x.bin", says="not in the staging directory")
    fails(str(staged / "a.bin"), "ftp://host/a.bin", says="ftp")
    fails(str(staged / "a.bin"), f"file://{tmp_path}/raw/missing.bin", says="missing.bin")
    fails(str(staged / "a.bin"), "s3://no-such-bucket-artfs/a.bin", says="no-such-bucket-artfs")
    fails(str(staged / "d" / "x.bin"), f"file://{tmp_path}/raw/y.bin", says="already exists")
    # a prefix with one taken path adds none of its objects
    fails(str(staged / "d"), f"file://{tmp_path}/raw/", says="already exists")
    assert sorted(os.listdir(staged / "d")) == ["x.bin"]
    fails(str(staged / "d" / "x.bin" / "z"), f"file://{tmp_path}/raw/y.bin", says="not a directory")
    fails(str(staged / "p"), f"file://{tmp_path}/raw/", "--max-objects", "1", says="2")
    assert sorted(os.listdir(staged)) == ["d"]

    m.close()  # a staged reference survives a restart of the daemon (it is a row of the staging database)
    m = mount_artfs(local_store_uri, cache_dir=m.cache_dir)
    staged = m.path / "fresh" / "staging"
    assert (staged / "d" / "x.bin").read_bytes() == b"x" * 1000
    assert seal(staged)["ref"] == "fresh:v0"
    items = {i["path"]: i for i in json.loads(run_artfs("files", "fresh:v0", "--json", "--store",
                                                          local_store_uri).stdout)}
    assert items["d/x.bin"]["reference"]["uri"] == f"file://{tmp_path}/raw/x.bin"
