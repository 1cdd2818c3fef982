"""Runs in the store (core/runs.py), without FUSE: records, status, concurrent writers, queries."""

from __future__ import annotations

import multiprocessing
import threading

import pytest

from artfs.core import runs
from artfs.core.commit import commit_tree
from artfs.core.records import VersionRecord
from artfs.core.store_keys import heartbeat_hour, heartbeat_hour_key, run_key
from artfs.errors import ArtfsError, Conflict, InvalidName, NotFound
from tests.support.repos import fresh_repo
from tests.support.trees import write_tree

T0 = 1_800_000_000.0


# where the store kind does not matter, the directory store only (S3 runs the tests that write and query)
local_only = pytest.mark.parametrize("store_uri", ["local"], indirect=True)


def version(artifact: str = "animals", n: int = 3, run: str | None = None) -> VersionRecord:
    return VersionRecord(artifact=artifact, version=n, type="dataset", digest=f"{n:032x}", manifest="0" * 32,
                         files=10, bytes=1000, created=T0, creator="t@h", run=run)


def test_run_id_sorts_by_time_and_is_unique():
    ids = [runs.new_run_id(T0 + i * 0.001) for i in range(50)]
    assert ids == sorted(ids) and len(set(ids)) == 50
    assert len({runs.new_run_id(T0) for _ in range(100)}) == 100
    for bad in ("", "../x", "20261201-025424.123-", "20261201-025424-abcd", "x" * 40):
        with pytest.raises(InvalidName):
            runs.check_run_id(bad)


def test_start_inputs_outputs_end(repo, tmp_path):
    rec = runs.start_run(repo, name="prep", job_type="preprocess", config={"lr": 0.01, "layers": [1, 2]},
                         command=["python", "prep.py"], cwd=str(tmp_path), now=T0)
    assert rec.name == "prep" and rec.job_type == "preprocess" and rec.git_commit is None
    assert rec.creator and rec.host and rec.pid > 0
    info = runs.run_info(repo, rec.id, now=T0 + 1)
    assert info.record == rec and info.status == "running" and info.inputs == [] and info.outputs == []

    v3, other = version("animals", 3), version("labels", 0)
    runs.record_input(repo, rec.id, v3, "observed", 2, 200, "mount-a")
    runs.record_input(repo, rec.id, v3, "observed", 5, 500, "mount-a")  # a larger cumulative snapshot
    runs.record_input(repo, rec.id, v3, "observed", 5, 500, "mount-a")  # the same again: changes nothing
    runs.record_input(repo, rec.id, v3, "declared", 1, 10, "api")
    runs.record_input(repo, rec.id, other, "observed", 1, 7, "mount-a")
    runs.record_output(repo, rec.id, version("model", 0, run=rec.id))
    runs.heartbeat(repo, rec.id, now=T0 + 5)
    runs.heartbeat(repo, rec.id, now=T0 + 15)

    info = runs.run_info(repo, rec.id, now=T0 + 20)
    assert info.status == "running" and info.last_heartbeat == pytest.approx(T0 + 15)
    by_ref = {i.ref: i for i in info.inputs}
    assert set(by_ref) == {"animals:v3", "labels:v0"}
    merged = by_ref["animals:v3"]
    assert (merged.files, merged.bytes, merged.digest) == (6, 510, v3.digest)  # max per source, summed
    assert merged.how == "declared+observed" and set(merged.source.split(",")) == {"api", "mount-a"}
    assert (by_ref["labels:v0"].files, by_ref["labels:v0"].how) == (1, "observed")
    assert info.outputs == [("model", 0)]
    assert runs.runs_using(repo, "animals", 3) == [rec.id] and runs.runs_using(repo, "animals", 2) == []
    assert runs.producing_run(repo, version("model", 0, run=rec.id)) == rec.id

    runs.end_run(repo, rec.id, "failed", 3, now=T0 + 30)
    runs.end_run(repo, rec.id, "finished", now=T0 + 40)  # the first end stands
    info = runs.run_info(repo, rec.id, now=T0 + 10_000)
    assert (info.status, info.exit_code, info.ended, info.duration) == ("failed", 3, T0 + 30, 30)
    js = info.as_json()
    assert js["inputs"][0]["ref"] == "animals:v3" and js["outputs"] == [
        {"ref": "model:v0", "artifact": "model", "version": 0}]
    assert js["config"] == {"lr": 0.01, "layers": [1, 2]} and js["status"] == "failed"


@local_only
def test_crashed_when_heartbeats_stop(repo):
    rec = runs.start_run(repo, heartbeat=10, now=T0)
    assert runs.run_info(repo, rec.id, now=T0 + 29).status == "running"  # start counts as a sign of life
    assert runs.run_info(repo, rec.id, now=T0 + 31).status == "crashed"
    runs.heartbeat(repo, rec.id, now=T0 + 25)
    runs.heartbeat(repo, rec.id, now=T0 + 50)
    runs.heartbeat(repo, rec.id, now=T0 + 40)  # written late: the newest by time still wins
    info = runs.run_info(repo, rec.id, now=T0 + 79)
    assert info.status == "running" and info.last_heartbeat == pytest.approx(T0 + 50) and info.duration is None
    info = runs.run_info(repo, rec.id, now=T0 + 81)
    assert info.status == "crashed" and info.duration == pytest.approx(50)
    late = T0 + 3 * 3600 + 5  # hours later; an hour whose key was written but not its heartbeat is passed over
    runs.heartbeat(repo, rec.id, now=late)
    repo.store.create_if_absent(heartbeat_hour_key(rec.id, heartbeat_hour(late) + 1), b"")
    assert runs.run_info(repo, rec.id, now=late + 1).last_heartbeat == pytest.approx(late)
    runs.end_run(repo, rec.id, "finished", now=T0 + 90)
    info = runs.run_info(repo, rec.id, now=T0 + 10_000)
    assert (info.status, info.last_heartbeat) == ("finished", pytest.approx(late))
    silent = runs.start_run(repo, heartbeat=0, now=T0)  # promised no heartbeats: never judged crashed
    assert runs.run_info(repo, silent.id, now=T0 + 10_000).status == "running"


@local_only
def test_list_runs_newest_first_with_limit(repo):
    ids = [runs.start_run(repo, name=f"r{i}", now=T0 + i * 30_000).id for i in range(6)]  # over three days
    ids.append(runs.start_run(repo, name="r6", now=T0 + 5 * 30_000 + 1).id)
    assert len({i[:8] for i in ids}) == 3
    assert [i.id for i in runs.list_runs(repo)] == ids[::-1]
    for limit in range(1, 9):
        assert runs.run_ids(repo, limit) == ids[::-1][:limit]
    assert [i.record.name for i in runs.list_runs(repo, limit=2)] == ["r6", "r5"]
    assert runs.list_runs(repo, limit=0) == []
    repo.store.put(run_key(ids[2]), b"not json")  # a damaged record hides nothing else
    assert [i.id for i in runs.list_runs(repo)] == [i for i in ids[::-1] if i != ids[2]]


@local_only
def test_bad_input(repo):
    with pytest.raises(NotFound, match="does not exist"):
        runs.run_info(repo, runs.new_run_id())
    with pytest.raises(InvalidName):
        runs.run_info(repo, "../../etc")
    rec = runs.start_run(repo)
    with pytest.raises(Conflict):
        runs.start_run(repo, run_id=rec.id)
    with pytest.raises(ArtfsError, match="JSON"):
        runs.start_run(repo, config={"f": object()})
    with pytest.raises(InvalidName):
        runs.start_run(repo, job_type="no spaces")
    with pytest.raises(InvalidName):
        runs.record_input(repo, rec.id, version(), "observed", 1, 1, "a/b")
    with pytest.raises(ValueError):
        runs.record_input(repo, rec.id, version(), "guessed", 1, 1, "api")
    with pytest.raises(ValueError):
        runs.end_run(repo, rec.id, "crashed")
    assert runs.run_exists(repo, rec.id) and not runs.run_exists(repo, runs.new_run_id())


@local_only
def test_publish_with_run_records_the_output(repo, tmp_path):
    rec = runs.start_run(repo, name="train")
    write_tree(tmp_path / "model", {"w.bin": b"weights"})
    result = commit_tree(repo, str(tmp_path / "model"), "resnet", run=rec.id)
    assert result.record is not None and result.record.run == rec.id
    assert runs.producing_run(repo, repo.version("resnet", 0)) == rec.id
    assert runs.run_info(repo, rec.id).outputs == [("resnet", 0)]


def test_concurrent_input_writers_lose_nothing(repo):
    """Many threads, one run: every version each recorded is there, with every source's largest snapshot."""
    rec = runs.start_run(repo)
    barrier = threading.Barrier(4)

    def writer(k: int) -> None:
        barrier.wait()
        for n in range(6):
            for files in (1, 2, 3):
                runs.record_input(repo, rec.id, version("data", n), "observed", files, files * 100 + k, f"m{k}")

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    info = runs.run_info(repo, rec.id)
    assert sorted(i.ref for i in info.inputs) == [f"data:v{n}" for n in range(6)]
    for i in info.inputs:
        assert i.files == 4 * 3 and i.bytes == sum(300 + k for k in range(4))
        assert runs.runs_using(repo, "data", i.version) == [rec.id]


def _record_in_process(store_uri: str, cache: str, run_id: str, source: str) -> None:
    repo = fresh_repo(store_uri, cache)
    try:
        for n in range(5):
            runs.record_input(repo, run_id, version("data", n), "observed", 2, 20, source)
            runs.heartbeat(repo, run_id)
        runs.record_output(repo, run_id, version(f"out-{source}", 0, run=run_id))
    finally:
        repo.close()


def test_two_processes_record_one_run(local_store_uri, tmp_path):
    """Two machines (processes, each its own cache) recording one run at once: none of it lost."""
    repo = fresh_repo(local_store_uri, tmp_path / "c0")
    try:
        rec = runs.start_run(repo)
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=_record_in_process,
                             args=(local_store_uri, str(tmp_path / f"c{k}"), rec.id, f"m{k}")) for k in (1, 2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
        info = runs.run_info(repo, rec.id)
        assert [(i.ref, i.files, i.bytes) for i in sorted(info.inputs, key=lambda i: i.version)] == [
            (f"data:v{n}", 4, 40) for n in range(5)]
        assert info.outputs == [("out-m1", 0), ("out-m2", 0)] and info.last_heartbeat is not None
    finally:
        repo.close()
