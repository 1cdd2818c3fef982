"""The W&B-shaped Python API (artfs/tracking.py): runs that use and log artifacts, on real stores.

The example of issue 10 end to end, on a directory store and on S3; failure marks a run failed (the
`with` block, and an uncaught exception at exit); inside `artfs run`, init() joins that run; `.path()`
finds a real mount of the same store; `.download()` is byte-exact; bad input is one clear error.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import artfs
from artfs.core import lifecycle
from artfs.errors import ArtfsError, InvalidName, NotFound
from tests.support.cli import run_artfs
from tests.support.polling import eventually
from tests.support.repos import commit
from tests.support.trees import snapshot, write_tree


def _animals(store_uri: str, tmp_path: Path) -> tuple[str, Path]:
    """animals:v0 and animals:v1 (latest, the one `animals:latest` resolves to): (store, v1's source)."""
    v0, v1 = tmp_path / "animals-v0", tmp_path / "animals-v1"
    write_tree(v0, {"cat.png": b"cat" * 100})
    write_tree(v1, {"cat.png": b"cat" * 100, "dogs/dog.png": os.urandom(70_000), "labels.csv": b"cat,1\n"})
    commit(store_uri, v0, "animals", tmp_path / "writer")
    commit(store_uri, v1, "animals", tmp_path / "writer")
    return store_uri, v1


@pytest.fixture
def animals(store_uri: str, tmp_path: Path) -> tuple[str, Path]:
    return _animals(store_uri, tmp_path)


def _model_inputs(tmp_path: Path) -> tuple[Path, Path]:
    out = tmp_path / "out"
    write_tree(out, {"weights.bin": os.urandom(200_000), "logs/train.txt": b"epoch 1\n"})
    config = tmp_path / "config.yaml"
    config.write_text("lr: 0.01\n")
    return out, config


def test_the_example_end_to_end(animals: tuple[str, Path], tmp_path: Path) -> None:
    store, v1_src = animals
    out, config = _model_inputs(tmp_path)
    with artfs.init(job_type="train", config={"lr": 0.01}, store=store) as run:
        data = run.use_artifact("animals:latest")
        assert (data.ref, data.version, data.aliases) == ("animals:v1", 1, ["latest"])
        path = data.path()  # no mount of this store: a copy, made once
        assert snapshot(path) == snapshot(v1_src) and data.path() == path
        assert [f.path for f in data.files()] == ["cat.png", "dogs/dog.png", "labels.csv"]
        model = artfs.Artifact("resnet", type="model", metadata={"acc": 0.91, "note": "first"})
        model.add_dir(str(out))
        model.add_file(str(config), name="cfg/config.yaml")
        with model.new_file("meta/info.json") as f:
            f.write('{"epochs": 1}')
        logged = run.log_artifact(model, aliases=["candidate"])
        assert run.status == "running"

    assert (logged.ref, logged.type, logged.aliases) == ("resnet:v0", "model", ["latest", "candidate"])
    assert logged.metadata == {"acc": "0.91", "note": "first"} and model.logged == logged
    assert logged.record.run == run.id
    info = run.info()
    assert (info.status, info.exit_code, info.record.job_type, info.record.config) == ("finished", 0, "train",
                                                                                        {"lr": 0.01})
    assert [(i.artifact, i.version, i.digest, i.how) for i in info.inputs] == [("animals", 1, data.digest,
                                                                                 "declared")]
    assert info.outputs == [("resnet", 0)]
    assert run.used_artifacts() == [data] and run.logged_artifacts() == [logged]
    producer = logged.logged_by()
    assert producer is not None and producer.id == run.id and producer.job_type == "train"
    assert [r.id for r in data.used_by()] == [run.id]
    assert artfs.run(run.id, store=store).status == "finished"
    assert [r.id for r in artfs.runs(store=store)] == [run.id]

    expected = tmp_path / "expected"
    write_tree(expected, {"weights.bin": (out / "weights.bin").read_bytes(), "logs/train.txt": b"epoch 1\n",
                          "cfg/config.yaml": b"lr: 0.01\n", "meta/info.json": b'{"epochs": 1}'})
    got = logged.download(tmp_path / "resnet")
    assert got == str(tmp_path / "resnet")
    assert snapshot(got, digests=True) == snapshot(expected, digests=True)  # byte-exact
    assert {f.path for f in logged.files()} == {"weights.bin", "logs/train.txt", "cfg/config.yaml",
                                                "meta/info.json"}


def test_an_unchanged_tree_logs_no_new_version_and_delete(local_store_uri: str, tmp_path: Path) -> None:
    out, _ = _model_inputs(tmp_path)
    with artfs.init(store=local_store_uri) as run:
        first = artfs.Artifact("resnet", type="model")
        first.add_dir(out)
        v0 = run.log_artifact(first)
        again = artfs.Artifact("resnet", type="model")
        again.add_dir(out)
        same = run.log_artifact(again, aliases=["best"])
    assert same.ref == v0.ref == "resnet:v0" and same.aliases == ["latest", "best"]
    assert run.info().outputs == [("resnet", 0)]
    with pytest.raises(ArtfsError, match="best"):
        again.delete()  # an alias points at it
    again.delete(delete_aliases=True)
    with pytest.raises(NotFound):
        artfs.api.resolve("resnet:v0", store=local_store_uri)


def test_an_artifact_with_a_ttl_expires(local_store_uri: str, tmp_path: Path) -> None:
    out, _ = _model_inputs(tmp_path)
    with artfs.init(store=local_store_uri) as run:
        model = artfs.Artifact("ckpt", type="model", ttl="1d")
        model.add_dir(out)
        v0 = run.log_artifact(model)
        newer = artfs.Artifact("ckpt", type="model")
        newer.add_dir(out)
        newer.add_file(out / "weights.bin", name="extra.bin")
        v1 = run.log_artifact(newer)
    assert (v0.ref, v1.ref) == ("ckpt:v0", "ckpt:v1") and v1.aliases == ["latest"] and v0.aliases == []
    with artfs.api.open_repo(local_store_uri) as repo:
        later = v0.created + 2 * 86400
        states = lifecycle.version_states(repo, "ckpt", now=later)
        assert states[0].deleted_at is not None and states[1].deleted_at is None
    with pytest.raises(ArtfsError, match="invalid"):
        artfs.Artifact("ckpt", ttl="soon")


def test_prefixes_symlinks_and_binary_new_files(local_store_uri: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_tree(src, {"a/x.txt": b"x", "b.bin": b"\0\1"})
    os.symlink("a/x.txt", src / "link")
    art = artfs.Artifact("shapes", description="several shapes")
    art.add_dir(src, name="data/")
    art.add_file(src / "link", name="followed.txt")  # add_file follows a symlink, add_dir keeps it
    with art.new_file("bin/raw", mode="wb") as f:
        f.write(b"\xff" * 10)
    with artfs.init(store=local_store_uri) as run:
        v = run.log_artifact(art)
    assert v.description == "several shapes" and v.type == "dataset"
    assert [(f.path, f.kind) for f in v.files()] == [
        ("bin/raw", "file"), ("data/a/x.txt", "file"), ("data/b.bin", "file"), ("data/link", "symlink"),
        ("followed.txt", "file")]
    copy = v.download()
    assert v.download() == copy  # the cached copy, made once
    assert snapshot(Path(copy) / "data") == snapshot(src)
    assert (Path(copy) / "followed.txt").read_bytes() == b"x" and (Path(copy) / "bin/raw").read_bytes() == b"\xff" * 10


def test_an_exception_marks_the_run_failed(local_store_uri: str) -> None:
    with pytest.raises(ZeroDivisionError), artfs.init(name="boom", store=local_store_uri) as run:
        1 / 0  # noqa: B018
    info = run.info()
    assert (info.status, info.exit_code, info.record.name) == ("failed", 1, "boom")
    with pytest.raises(ArtfsError, match="not open"):
        run.use_artifact("animals")


def test_finish_without_with(local_store_uri: str) -> None:
    run = artfs.init(store=local_store_uri)
    assert run.status == "running"
    run.finish(exit_code=3)
    run.finish()  # once only
    assert (run.info().status, run.info().exit_code) == ("failed", 3)


def test_heartbeats_and_an_uncaught_exception_at_exit(local_store_uri: str, tmp_path: Path) -> None:
    """A run left open by a script that dies of an exception is failed by the exit hook, and beat meanwhile."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(f"""
        import time, artfs
        run = artfs.init(name="no-with", store={local_store_uri!r})
        print(run.id, flush=True)
        time.sleep(0.5)
        raise RuntimeError("the training diverged")
    """))
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "ARTFS_RUN_HEARTBEAT": "0.05"}, check=False)
    assert res.returncode == 1 and "the training diverged" in res.stderr
    info = artfs.run(res.stdout.strip(), store=local_store_uri).info()
    assert (info.status, info.exit_code) == ("failed", 1)
    assert info.last_heartbeat is not None and info.last_heartbeat > info.record.started


def test_init_inside_artfs_run_joins_that_run(local_store_uri: str, tmp_path: Path) -> None:
    store, _ = _animals(local_store_uri, tmp_path)
    (tmp_path / "w.bin").write_bytes(b"weights")
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(f"""
        import artfs
        with artfs.init(job_type="ignored") as run:
            print(run.id, flush=True)
            run.use_artifact("animals:v0")
            model = artfs.Artifact("resnet", type="model")
            model.add_file({str(tmp_path / "w.bin")!r})
            run.log_artifact(model)
    """))
    res = run_artfs("run", "--store", store, "--name", "train", "--job-type", "train", "--",
                    sys.executable, str(script))
    runs = artfs.runs(store=store)
    assert [r.id for r in runs] == [res.stdout.strip()]  # one run, not two
    info = runs[0].info()
    assert (info.status, info.record.name, info.record.job_type) == ("finished", "train", "train")
    assert [(i.artifact, i.version, i.how) for i in info.inputs] == [("animals", 0, "declared")]
    assert info.outputs == [("resnet", 0)]


def test_path_is_in_a_mount_of_the_same_store(mount_artfs, local_store_uri: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_tree(src, {"a.txt": b"alpha\n", "sub/b.bin": os.urandom(50_000)})
    commit(local_store_uri, src, "animals", tmp_path / "writer")
    other = tmp_path / "other-store"
    commit(str(other), src, "animals", tmp_path / "writer2")
    mnt = mount_artfs(local_store_uri)
    with artfs.init(store=local_store_uri) as run:
        data = run.use_artifact("animals")
        path = data.path()
        assert path == os.path.join(mnt.path, "animals", "v0")
        assert snapshot(path) == snapshot(src)
    # init() made this process a run root, so the mount counts what it read (where capture is built in)
    if importlib.util.find_spec("artfs.fs.run_capture") is not None:
        eventually(lambda: [(i.how, i.files) for i in run.info().inputs] == [("declared+observed", 2)],
                   what="the reads through the mount recorded as an observed input")
    with artfs.init(store=str(other)) as run:  # a mount of another store is not this version
        elsewhere = run.use_artifact("animals").path()
    assert not elsewhere.startswith(str(mnt.path)) and snapshot(elsewhere) == snapshot(src)


def test_bad_input_is_one_clear_error(local_store_uri: str, tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(InvalidName):
        artfs.Artifact("no/slashes")
    art = artfs.Artifact("thing")
    art.add_file(tmp_path / "f.txt")
    with pytest.raises(ArtfsError, match="already in this artifact"):
        art.add_file(tmp_path / "f.txt")
    with pytest.raises(ArtfsError, match="already a file"):
        art.add_file(tmp_path / "f.txt", name="f.txt/under")
    with pytest.raises(InvalidName, match="invalid name"):
        art.add_file(tmp_path / "f.txt", name="../escape")
    with pytest.raises(ArtfsError, match="does not exist"):
        art.add_dir(tmp_path / "missing")
    with pytest.raises(ArtfsError, match="not a regular file"):
        art.add_file(tmp_path)
    with pytest.raises(RuntimeError), art.new_file("half.txt") as f:
        f.write("half")
        raise RuntimeError
    with pytest.raises(ArtfsError, match="mode"):
        art.new_file("r.txt", mode="r").__enter__()
    with pytest.raises(ArtfsError, match="has not been logged"):
        art.delete()
    with artfs.init(store=local_store_uri) as run:
        with pytest.raises(NotFound):
            run.use_artifact("nothing:latest")
        v = run.log_artifact(art)
        assert [f.path for f in v.files()] == ["f.txt"]  # the failed new_file added nothing
        wrong = artfs.Artifact("thing", type="model")
        with pytest.raises(ArtfsError, match="is a dataset, not a model"):
            run.log_artifact(wrong)
        with pytest.raises(ArtfsError, match="takes an artfs.Artifact"):
            run.log_artifact("f.txt")  # type: ignore[arg-type]
    with pytest.raises(InvalidName):
        artfs.run("not-a-run-id", store=local_store_uri)
    with pytest.raises(NotFound):
        artfs.run("20261201-025424.123-3fa9c1b2", store=local_store_uri)


def test_import_artfs_stays_light() -> None:
    code = "import artfs, sys; print(sorted(m for m in ('boto3', 'pyfuse3', 'trio') if m in sys.modules))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert res.stdout.strip() == "[]"
