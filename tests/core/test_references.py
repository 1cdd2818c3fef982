"""References (core/references.py, storage/sources.py): entries whose bytes live in an external object,
pinned so a version means the same bytes or fails loudly — file:// and s3:// (a second bucket on the moto
server: "the other team's bucket", versioned and not), without FUSE."""

from __future__ import annotations

import os
import random
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from artfs.artifact_files import TreeSpec, commit_spec
from artfs.core.commit import commit_tree
from artfs.core.content import ChunkReader, FileLayout
from artfs.core.export import export_version
from artfs.core.names import parse_ref
from artfs.core.references import entry_source, split_ref_arg
from artfs.core.verify import verify
from artfs.errors import ArtfsError, InvalidName
from artfs.storage.sources import S3Objects, SourceChanged, reset_clients
from tests.support.repos import fresh_repo
from tests.support.trees import snapshot, write_tree

MiB = 1 << 20


@pytest.fixture(autouse=True)
def _fresh_clients():
    reset_clients()  # the S3 client reads AWS_ENDPOINT_URL when made: after the server fixture set it
    yield
    reset_clients()


def _put(repo, uri_or_uris, name="refs", checksum=True, at=None, max_objects=None):
    spec = TreeSpec()
    for uri in [uri_or_uris] if isinstance(uri_or_uris, str) else uri_or_uris:
        spec.add_reference(uri, at, checksum, max_objects)
    result = commit_spec(repo, spec, name, None, "", {}, (), None)
    assert result.record is not None
    return result


def _layout(repo, rec, path):
    header, entries = repo.entries(rec)
    (entry,) = [e for e in entries if e.path == path]
    return FileLayout.of_entry(entry, header.packs), entry_source(entry, header.packs)


def _cold_read(repo, tmp_path, rec, path, off, size):
    """A read as a fresh machine makes it: no cached chunks."""
    other = fresh_repo(repo.store.uri, tmp_path / f"cold-{uuid.uuid4().hex[:6]}")
    try:
        layout, _ = _layout(other, rec, path)
        return ChunkReader(other.store, other.cache).read(layout, off, size)
    finally:
        other.close()


# --- file:// ---------------------------------------------------------------------------------------


@pytest.fixture
def repo(local_store_uri, tmp_path):
    """file:// cases need no S3 store (the s3:// ones below open their own)."""
    r = fresh_repo(local_store_uri, tmp_path / "cache")
    yield r
    r.close()


@pytest.fixture
def raw(tmp_path):
    root = tmp_path / "raw"
    write_tree(root, {"big.bin": random.Random(3).randbytes(5 * MiB), "empty": b"",
                      "sub/with space ünï.txt": b"hello references", "sub/deeper/x.csv": b"a,b\n1,2\n"})
    (tmp_path / "raw2").mkdir()
    (tmp_path / "raw2" / "not-me.txt").write_bytes(b"a sibling prefix")
    return root


def test_a_file_prefix_round_trips_and_dedups_with_the_same_bytes_put_as_content(repo, tmp_path, raw) -> None:
    res = _put(repo, f"file://{raw}/")
    assert res.uploaded_bytes == 0 and res.files == 4
    dest = tmp_path / "out"
    export_version(repo, res.record, str(dest))
    assert snapshot(dest) == {k: (v[0], 0o644, v[2]) if v[0] == "file" else (v[0], 0o755, v[2])
                              for k, v in snapshot(raw).items()}
    _, source = _layout(repo, res.record, "empty")
    assert source is not None and source.pin.size == 0, "zero-byte objects are kept, as references"
    content = commit_tree(repo, str(raw), "as-content")
    assert content.digest == res.digest, "the same bytes referenced or stored give the same version digest"
    assert _cold_read(repo, tmp_path, res.record, "big.bin", 3 * MiB + 5, 4096) == \
        (raw / "big.bin").read_bytes()[3 * MiB + 5 : 3 * MiB + 5 + 4096]


def test_a_changed_or_removed_file_fails_reads_never_new_bytes(repo, tmp_path, raw) -> None:
    res = _put(repo, [f"file://{raw}/big.bin", f"file://{raw}/sub/deeper/x.csv"])
    with open(raw / "big.bin", "r+b") as f:  # same size, new bytes
        f.seek(4 * MiB)
        f.write(b"tampered")
    (raw / "sub" / "deeper" / "x.csv").unlink()
    with pytest.raises(SourceChanged, match=r"big\.bin changed .*pinned: mtime_ns"):
        _cold_read(repo, tmp_path, res.record, "big.bin", 0, 4096)  # a 4 KiB read far from the change too
    with pytest.raises(SourceChanged, match=r"x\.csv is gone"):
        _cold_read(repo, tmp_path, res.record, "x.csv", 0, 4)
    with pytest.raises(ArtfsError, match=r"2 referenced objects changed or vanished .*x\.csv is gone"):
        export_version(repo, res.record, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    assert export_version(repo, res.record, str(tmp_path / "none"), references="skip").skipped == 2
    report = verify(repo, [res.record])
    assert set(report.drifted) == {f"file://{raw}/big.bin", f"file://{raw}/sub/deeper/x.csv"}
    assert report.broken[0].broken_files == 2


def test_no_checksum_reads_nothing_at_add_time_and_checks_the_pin_on_each_read(repo, tmp_path, raw) -> None:
    res = _put(repo, f"file://{raw}/big.bin", checksum=False)
    _, source = _layout(repo, res.record, "big.bin")
    assert source is not None and not source.checksum
    assert _cold_read(repo, tmp_path, res.record, "big.bin", MiB, 4096) == \
        (raw / "big.bin").read_bytes()[MiB : MiB + 4096]
    os.utime(raw / "big.bin", ns=(1, 1))
    with pytest.raises(SourceChanged):
        _cold_read(repo, tmp_path, res.record, "big.bin", MiB, 4096)


def test_prefixes_match_whole_segments_and_paths_go_under_name(repo, raw) -> None:
    spec = TreeSpec()
    added = spec.add_reference(f"file://{str(raw).rstrip('/')}", "data")  # no slash: still raw/, not raw2/
    assert sorted(added) == ["data/big.bin", "data/empty", "data/sub/deeper/x.csv", "data/sub/with space ünï.txt"]
    with pytest.raises(ArtfsError, match=r"holds 4 objects, more than max_objects=3"):
        TreeSpec().add_reference(f"file://{raw}/", max_objects=3)
    with pytest.raises(ArtfsError, match="already in this artifact"):
        spec.add_reference(f"file://{raw}/big.bin", "data/big.bin")
    assert sorted(spec.paths) == ["data", "data/big.bin", "data/empty", "data/sub", "data/sub/deeper",
                                  "data/sub/deeper/x.csv", "data/sub/with space ünï.txt"]


def test_ref_arguments_and_bad_uris() -> None:
    assert split_ref_arg("raw=s3://b/raw/") == ("raw", "s3://b/raw/")
    assert split_ref_arg("s3://b/year=2024/x.parquet") == (None, "s3://b/year=2024/x.parquet")
    assert split_ref_arg("s3://b/k=v=s3://x") == (None, "s3://b/k=v=s3://x")
    for bad, why in [("ftp://host/x", "not supported"), ("no-scheme/path", "not a URI"),
                     ("file://host/x", "local path"), ("s3:///key", "no bucket")]:
        with pytest.raises(InvalidName, match=why):
            TreeSpec().add_reference(bad)


def test_an_unreachable_http_endpoint_fails_fast_with_one_line() -> None:
    with pytest.raises(ArtfsError, match=r"cannot reach http://127\.0\.0\.1:9"):
        TreeSpec().add_reference("http://127.0.0.1:9/x.bin")


# --- s3:// -----------------------------------------------------------------------------------------


@pytest.fixture
def other_bucket(s3_server):
    """Another team's bucket on the same S3 server; `versioned` on request."""
    client = s3_server.client()

    def make(versioned: bool = False) -> str:
        bucket = s3_server.create_bucket(f"other-{uuid.uuid4().hex[:10]}")
        if versioned:
            client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        return bucket

    make.client = client  # type: ignore[attr-defined]
    return make


@pytest.mark.parametrize("versioned", [False, True])
def test_an_overwritten_s3_object_fails_unless_its_version_is_pinned(s3_store_uri, tmp_path, other_bucket,
                                                                     versioned) -> None:
    bucket, client = other_bucket(versioned), other_bucket.client
    old = random.Random(5).randbytes(3 * MiB)
    client.put_object(Bucket=bucket, Key="raw/model weights.bin", Body=old)
    client.put_object(Bucket=bucket, Key="raw/zero", Body=b"")
    client.put_object(Bucket=bucket, Key="raw/sub/ünï cöde.txt", Body=b"unicode")
    client.put_object(Bucket=bucket, Key="raw2/other", Body=b"not under raw/")
    repo = fresh_repo(s3_store_uri, tmp_path / "cache")
    try:
        res = _put(repo, f"s3://{bucket}/raw", at="data")
        header, entries = repo.entries(res.record)
        assert sorted(e.path for e in entries) == ["data", "data/model weights.bin", "data/sub",
                                                   "data/sub/ünï cöde.txt", "data/zero"]
        assert _cold_read(repo, tmp_path, res.record, "data/sub/ünï cöde.txt", 0, 100) == b"unicode"
        _, source = _layout(repo, res.record, "data/model weights.bin")
        assert source is not None and source.pin.etag and bool(source.pin.version_id) == versioned
        client.put_object(Bucket=bucket, Key="raw/model weights.bin", Body=b"x" * len(old))  # same size
        if versioned:  # the pinned VersionId still reads the old bytes, whole and by range
            export_version(repo, res.record, str(tmp_path / "out"))
            assert (tmp_path / "out" / "data" / "model weights.bin").read_bytes() == old
            assert _cold_read(repo, tmp_path, res.record, "data/model weights.bin", 2 * MiB, 4096) == \
                old[2 * MiB : 2 * MiB + 4096]
            assert verify(repo, [res.record], deep=True).drifted == {}
        else:
            with pytest.raises(SourceChanged, match=rf"s3://{bucket}/raw/model weights.bin changed .*ETag"):
                _cold_read(repo, tmp_path, res.record, "data/model weights.bin", 2 * MiB, 4096)
            with pytest.raises(ArtfsError, match=rf"1 referenced objects changed .*s3://{bucket}/raw/model weights"):
                export_version(repo, res.record, str(tmp_path / "out"))
            assert not (tmp_path / "out").exists()
            partial = export_version(repo, res.record, str(tmp_path / "rest"), references="allow-missing")
            assert list(partial.missing) == [f"s3://{bucket}/raw/model weights.bin"]
            assert sorted(os.listdir(tmp_path / "rest" / "data")) == ["sub", "zero"]
            report = verify(repo, [res.record])
            assert list(report.drifted) == [f"s3://{bucket}/raw/model weights.bin"]
            assert report.broken[0].paths == ["data/model weights.bin"]
            client.delete_object(Bucket=bucket, Key="raw/sub/ünï cöde.txt")
            assert "is gone" in verify(repo, [res.record]).drifted[f"s3://{bucket}/raw/sub/ünï cöde.txt"]
    finally:
        repo.close()


def test_a_prefix_across_list_pages_and_max_objects(s3_store_uri, tmp_path, other_bucket, monkeypatch) -> None:
    bucket, client = other_bucket(), other_bucket.client
    monkeypatch.setattr(S3Objects, "page_size", 100)  # pages of 100 keys: 3 pages, not 3,000 objects
    n = 250
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: client.put_object(Bucket=bucket, Key=f"p/{i:05d}", Body=b"%d" % i), range(n)))
    with pytest.raises(ArtfsError, match=rf"holds {n:,} objects, more than max_objects=120"):
        TreeSpec().add_reference(f"s3://{bucket}/p/", max_objects=120)
    repo = fresh_repo(s3_store_uri, tmp_path / "cache")
    try:
        res = _put(repo, f"s3://{bucket}/p/", checksum=False, max_objects=n)
        assert res.files == n and res.uploaded_bytes == 0
        assert _cold_read(repo, tmp_path, res.record, "00249", 0, 100) == b"249"
    finally:
        repo.close()


# --- https:// and http:// -------------------------------------------------------------------------


@pytest.mark.parametrize("etags", [True, False], ids=["etag", "last-modified"])
def test_an_http_object_is_pinned_by_etag_or_last_modified(repo, tmp_path, http_server, etags) -> None:
    root = tmp_path / "www"
    body = random.Random(8).randbytes(2 * MiB + 17)
    write_tree(root, {"data/weights v1.bin": body, "empty.txt": b""})
    http = http_server(root, etags=etags)
    res = _put(repo, [f"{http.url}/data/weights%20v1.bin", f"{http.url}/empty.txt"])
    _, source = _layout(repo, res.record, "weights v1.bin")
    assert source is not None and bool(source.pin.etag) == etags and bool(source.pin.last_modified) != etags
    assert _cold_read(repo, tmp_path, res.record, "weights v1.bin", MiB, 4096) == body[MiB : MiB + 4096]
    export_version(repo, res.record, str(tmp_path / "out"))
    assert (tmp_path / "out" / "weights v1.bin").read_bytes() == body
    path = root / "data" / "weights v1.bin"
    path.write_bytes(body[::-1])  # same size, new bytes
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5 * 10**9))  # past Last-Modified's 1 s resolution
    with pytest.raises(SourceChanged, match=r"weights%20v1\.bin changed"):
        _cold_read(repo, tmp_path, res.record, "weights v1.bin", MiB, 4096)
    assert list(verify(repo, [res.record]).drifted) == [f"{http.url}/data/weights%20v1.bin"]
    path.unlink()
    with pytest.raises(SourceChanged, match="is gone"):
        _cold_read(repo, tmp_path, res.record, "weights v1.bin", 0, 10)


def test_an_http_server_without_range_or_the_object_is_refused(tmp_path, http_server) -> None:
    write_tree(tmp_path / "www", {"a.bin": b"x" * 1000})
    plain = http_server(tmp_path / "www", ranges=False)
    with pytest.raises(ArtfsError, match="does not honour Range"):
        TreeSpec().add_reference(f"{plain.url}/a.bin")
    with pytest.raises(ArtfsError, match="HEAD answered 404"):
        TreeSpec().add_reference(f"{plain.url}/missing.bin")
    with pytest.raises(ArtfsError, match="HTTP has no listing"):
        TreeSpec().add_reference(f"{plain.url}/")


# --- the Python API --------------------------------------------------------------------------------


def test_artifact_add_reference_logs_a_version_that_reads_the_referenced_bytes(local_store_uri, tmp_path,
                                                                               raw) -> None:
    import artfs

    with artfs.init(store=local_store_uri) as run:
        ds = artfs.Artifact("ds")
        ds.add_file(str(raw / "sub" / "deeper" / "x.csv"), "meta/x.csv")  # stored beside the references
        assert ds.add_reference(f"file://{raw}/big.bin", name="weights/big.bin") == ["weights/big.bin"]
        assert sorted(ds.add_reference(f"file://{raw}/sub/", name="sub", checksum=False)) == \
            ["sub/deeper/x.csv", "sub/with space ünï.txt"]
        with pytest.raises(ArtfsError, match="more than max_objects=1"):
            ds.add_reference(f"file://{raw}/", name="all", max_objects=1)
        logged = run.log_artifact(ds)
    repo = fresh_repo(local_store_uri, tmp_path / "reader")
    try:
        rec = repo.resolve(parse_ref(logged.ref))
        assert _cold_read(repo, tmp_path, rec, "weights/big.bin", 0, 10) == (raw / "big.bin").read_bytes()[:10]
        assert _layout(repo, rec, "sub/deeper/x.csv")[1].checksum is False
        assert _layout(repo, rec, "meta/x.csv")[1] is None
    finally:
        repo.close()
