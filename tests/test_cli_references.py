"""`artfs put --ref`, `files`, `get`, `verify` with references (file:// here; s3:// and http:// are covered in
tests/core/test_references.py and through the mount in tests/fs/test_reference_reads.py)."""

from __future__ import annotations

import json
import os
import random

import pytest

from tests.support.cli import run_artfs
from tests.support.trees import snapshot, write_tree

MiB = 1 << 20


@pytest.fixture
def raw(tmp_path):
    write_tree(tmp_path / "raw", {"year=2024/part 1.bin": random.Random(2).randbytes(2 * MiB),
                                  "year=2024/empty": b"", "labels.csv": b"a,b\n"})
    return tmp_path / "raw"


def _artfs(store, *args, check=True):
    return run_artfs(*args, "--store", str(store), check=check)


def test_put_references_then_files_get_and_verify(tmp_path, raw) -> None:
    store = tmp_path / "store"
    code = tmp_path / "code"
    write_tree(code, {"train.py": b"print(1)\n"})
    out = _artfs(store, "put", str(code), "ds", "--ref", f"data=file://{raw}/",
                 "--ref", f"file://{raw}/year=2024/part 1.bin").stdout  # '=' in a key is no PATH=
    assert out.startswith("ds:v0") and "uploaded" in out
    listing = _artfs(store, "files", "ds").stdout
    assert f"data/labels.csv  @ file://{raw}/labels.csv (pinned: mtime_ns" in listing
    assert "chunk digests verified on every read" in listing
    assert "train.py" in listing and "@" not in listing.splitlines()[-1]  # train.py is stored content
    items = {i["path"]: i for i in json.loads(_artfs(store, "files", "ds", "--json").stdout)}
    assert items["part 1.bin"]["reference"]["checksum"] is True
    assert items["data/year=2024/empty"]["size"] == 0 and "reference" in items["data/year=2024/empty"]
    assert "reference" not in items["train.py"]

    _artfs(store, "get", "ds", str(tmp_path / "got"))
    assert snapshot(tmp_path / "got" / "data")["labels.csv"][2] == b"a,b\n"
    assert (tmp_path / "got" / "part 1.bin").read_bytes() == (raw / "year=2024/part 1.bin").read_bytes()

    (raw / "labels.csv").write_bytes(b"x,y\n")  # the other team rewrites a file
    res = _artfs(store, "verify", "ds", check=False)
    assert res.returncode == 1
    assert f"DRIFTED file://{raw}/labels.csv: referenced object file://{raw}/labels.csv changed" in res.stdout
    assert "BROKEN ds:v0: 1 files: data/labels.csv" in res.stdout
    res = _artfs(store, "get", "ds", str(tmp_path / "again"), check=False)
    assert res.returncode == 1 and res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert "1 referenced objects changed or vanished" in res.stderr and not (tmp_path / "again").exists()
    res = _artfs(store, "get", "ds", str(tmp_path / "rest"), "--allow-missing-references")
    assert f"left out: referenced object file://{raw}/labels.csv changed" in res.stderr
    assert not (tmp_path / "rest" / "data" / "labels.csv").exists()
    assert (tmp_path / "rest" / "train.py").exists()
    res = _artfs(store, "get", "ds", str(tmp_path / "code-only"), "--skip-references")
    assert sorted(os.listdir(tmp_path / "code-only")) == ["data", "train.py"]
    assert "4 referenced files skipped" in res.stdout


def test_a_version_of_references_only_without_checksum(tmp_path, raw) -> None:
    store = tmp_path / "store"
    _artfs(store, "put", "ds", "--ref", f"file://{raw}/labels.csv", "--no-checksum")
    listing = _artfs(store, "files", "ds").stdout
    assert "no checksum: as strong as its size + mtime" in listing
    _artfs(store, "get", "ds", str(tmp_path / "got"))
    assert (tmp_path / "got" / "labels.csv").read_bytes() == b"a,b\n"


@pytest.mark.parametrize(("args", "message"), [
    (["--ref", "ftp://host/x"], "scheme ftp:// is not supported"),
    (["--ref", "just/a/path"], "is not a URI"),
    (["--ref", "../up=file:///tmp"], "invalid name '../up'"),
    (["--ref", "file:///no/such/thing"], "No such file or directory"),
    (["--ref", "http://127.0.0.1:9/x"], "cannot reach http://127.0.0.1:9"),
    ([], "Missing argument 'NAME'"),
])
def test_bad_references_fail_with_one_line_and_upload_nothing(tmp_path, args, message) -> None:
    store = tmp_path / "store"
    res = run_artfs("put", "ds", *args, "--store", str(store), check=False)
    assert res.returncode != 0 and message in res.stderr and "Traceback" not in res.stderr
    assert not list((store / "packs").rglob("*")) if (store / "packs").exists() else True
    assert not (store / "artifacts").exists() or not list((store / "artifacts").rglob("*.json"))


def test_copy_stores_the_referenced_bytes_as_content(tmp_path, raw) -> None:
    store = tmp_path / "store"
    out = _artfs(store, "put", "ds", "--ref", f"file://{raw}/", "--copy").stdout
    assert "copied into the store as artfs content" in out
    items = json.loads(_artfs(store, "files", "ds", "--json").stdout)
    assert not [i for i in items if "reference" in i]
    for path in raw.rglob("*"):  # the source may now disappear
        if path.is_file():
            path.unlink()
    _artfs(store, "get", "ds", str(tmp_path / "got"))
    assert len((tmp_path / "got" / "year=2024" / "part 1.bin").read_bytes()) == 2 * MiB


def test_info_and_diff_show_references_with_uri_and_pin(tmp_path, raw) -> None:
    store = tmp_path / "store"
    code = tmp_path / "code"
    write_tree(code, {"train.py": b"print(1)\n"})
    _artfs(store, "put", str(code), "ds")
    _artfs(store, "put", str(code), "ds", "--ref", f"labels.csv=file://{raw}/labels.csv", "--no-checksum")
    info = _artfs(store, "info", "ds:v1").stdout
    assert f"labels.csv  @ file://{raw}/labels.csv (pinned: mtime_ns" in info and "1 referenced file" in info
    data = json.loads(_artfs(store, "info", "ds:v1", "--json").stdout)
    assert data["references"] == [{"path": "labels.csv", "uri": f"file://{raw}/labels.csv",
                                   "pin": data["references"][0]["pin"], "checksum": False,
                                   "pinned_by": data["references"][0]["pinned_by"]}]
    assert "references" not in json.loads(_artfs(store, "info", "ds:v0", "--json").stdout)

    diff = _artfs(store, "diff", "ds:v0", "ds:v1").stdout
    assert diff.strip() == f"+ labels.csv  @ {data['references'][0]['uri']} (pinned: {data['references'][0]['pin']}; " \
                           f"no checksum: as strong as its {data['references'][0]['pinned_by']})"
    back = json.loads(_artfs(store, "diff", "ds:v1", "ds:v0", "--json").stdout)
    assert back["removed"] == ["labels.csv"]
    assert back["references"]["labels.csv"]["from"]["uri"] == f"file://{raw}/labels.csv"
    assert back["references"]["labels.csv"]["to"] is None
