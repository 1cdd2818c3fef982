"""Runs captured through a real mount (fs/run_capture.py, fs/attribution.py): `artfs run` around real
processes — fork, exec, a shell pipeline, a daemonizing grandchild, a 2-worker multiprocessing loader —
and what the store then says the run read (observed inputs) and made (outputs); and the writer of
observed inputs alone, without FUSE."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio

from artfs.core import run_registry, runs
from artfs.core.places import Places
from artfs.core.repo import Repo
from artfs.core.store_keys import run_inputs_prefix
from artfs.fs import run_capture
from tests.support.cli import artfs_cmd, run_artfs
from tests.support.polling import eventually
from tests.support.repos import commit, fresh_repo

FILES = ("a.txt", "b.txt", "c.txt", "d/0.bin", "d/1.bin", "d/2.bin", "d/3.bin")

# Run by `artfs run`: reads 3 files of `latest` and 4 of `best`, in every way a training job's processes do.
READER = textwrap.dedent('''
    import multiprocessing, os, subprocess, sys, time

    def read(path):
        with open(path, "rb") as f:
            return len(f.read())

    def worker(todo, done):
        for path in iter(todo.get, None):
            done.put(read(path))

    if __name__ == "__main__":
        latest, best = sys.argv[1] + "/latest", sys.argv[1] + "/best"
        pid = os.fork()  # a forked child
        if pid == 0:
            read(latest + "/a.txt")
            os._exit(0)
        os.waitpid(pid, 0)
        read(latest + "/a.txt")  # again, by another process: still one file
        subprocess.run(["cat", latest + "/b.txt"], stdout=subprocess.DEVNULL, check=True)  # exec
        subprocess.run(f"cat {latest}/c.txt | wc -c >/dev/null", shell=True, check=True)  # a pipeline
        r, w = os.pipe()
        middle = os.fork()
        if middle == 0:  # a daemonizing grandchild: re-parented to `artfs run` (a subreaper) before it reads
            parent = os.getpid()
            if os.fork() == 0:
                os.setsid()
                while os.getppid() == parent:
                    time.sleep(0.005)
                os.write(w, str(read(best + "/d/3.bin")).encode())
            os._exit(0)
        os.close(w)
        assert os.read(r, 100)
        os.waitpid(middle, 0)
        ctx = multiprocessing.get_context("fork")  # a DataLoader-style loader: 2 workers, a queue of paths
        todo, done = ctx.Queue(), ctx.Queue()
        workers = [ctx.Process(target=worker, args=(todo, done)) for _ in range(2)]
        for p in workers:
            p.start()
        paths = [best + f"/d/{i}.bin" for i in range(3)]
        for path in paths + [None, None]:
            todo.put(path)
        sizes = [done.get() for _ in paths]
        for p in workers:
            p.join()
''')

# Outside any run: reads until told to stop (a file appears), all the while the run reads.
OUTSIDER = textwrap.dedent('''
    import os, sys, time
    art, stop, ready = sys.argv[1:4]
    while True:
        for rel in ("v1/a.txt", "v1/d/0.bin", "v2/d/0.bin", "v2/d/1.bin", "best/a.txt"):
            with open(os.path.join(art, rel), "rb") as f:
                f.read()
        open(ready, "w").close()
        if os.path.exists(stop):
            break
        time.sleep(0.01)
''')


def _write_version(root: Path, n: int) -> dict[str, int]:
    """A version's tree: every file differs between versions, each its own size. path → size."""
    sizes = {}
    for i, rel in enumerate(FILES):
        data = f"v{n} {rel} ".encode() * (10 + 7 * i + n)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        sizes[rel] = len(data)
    return sizes


@pytest.fixture
def three_versions(local_store_uri: str, tmp_path: Path) -> tuple[str, list[dict[str, int]]]:
    """animals v0 (alias `best`), v1, v2 (`latest`) in a local store: (store, sizes of each version)."""
    sizes = []
    for n in range(3):
        src = tmp_path / f"src{n}"
        sizes.append(_write_version(src, n))
        commit(local_store_uri, src, "animals", tmp_path / "writer-cache", aliases=("best",) if n == 0 else ())
    return local_store_uri, sizes


def _artfs_run(store: str, *cmd: str, cwd: Path | None = None) -> tuple[str, subprocess.Popen]:
    """`artfs run --store STORE -- CMD` started: (its run id, the process)."""
    proc = subprocess.Popen([*artfs_cmd("run", "--store", store, "--"), *cmd], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=cwd)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    match = re.search(r"run (\S+) ", line)
    assert match, f"no run id in {line!r}"
    return match.group(1), proc


def _finish(proc: subprocess.Popen) -> None:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, f"artfs run failed ({proc.returncode}): {out}{err}"


def _inputs(repo: Repo, run_id: str) -> dict[str, tuple[int, int]]:
    return {i.ref: (i.files, i.bytes) for i in runs.run_info(repo, run_id).inputs}


def _wait_inputs(repo: Repo, run_id: str, expected: dict[str, tuple[int, int]]) -> None:
    """The mount writes within seconds (and the final counts when the run leaves the registry)."""
    eventually(lambda: _inputs(repo, run_id) == expected, timeout=20, what=f"inputs of {run_id} = {expected}",
               interval=0.2)


def test_a_runs_processes_record_exactly_the_versions_they_read(mount_artfs, three_versions, tmp_path):
    store, sizes = three_versions
    m = mount_artfs(store)
    art = m.path / "animals"
    reader, outsider = tmp_path / "reader.py", tmp_path / "outsider.py"
    reader.write_text(READER)
    outsider.write_text(OUTSIDER)
    stop, ready = tmp_path / "stop", tmp_path / "ready"
    out = subprocess.Popen([sys.executable, str(outsider), str(art), str(stop), str(ready)])
    try:
        eventually(ready.exists, timeout=30, what="the outsider reading")
        run_id, proc = _artfs_run(store, sys.executable, str(reader), str(art))
        _finish(proc)
    finally:
        stop.touch()
        out.wait(timeout=60)
    assert out.returncode == 0
    repo = fresh_repo(store, tmp_path / "check-cache")
    try:
        v2 = (3, sum(sizes[2][f] for f in ("a.txt", "b.txt", "c.txt")))
        v0 = (4, sum(sizes[0][f"d/{i}.bin"] for i in range(4)))
        _wait_inputs(repo, run_id, {"animals:v2": v2, "animals:v0": v0})  # resolved: not `latest`, `best`
        info = runs.run_info(repo, run_id)
        assert {i.how for i in info.inputs} == {"observed"}
        assert {i.digest for i in info.inputs} == {repo.version("animals", 2).digest, repo.version("animals", 0).digest}
        assert runs.runs_using(repo, "animals", 1) == []  # the outsider's reads: nobody's input
        assert runs.runs_using(repo, "animals", 2) == [run_id]
    finally:
        repo.close()


def test_two_runs_at_once_on_one_mount_record_only_their_own(mount_artfs, three_versions, tmp_path):
    store, sizes = three_versions
    m = mount_artfs(store)
    art = m.path / "animals"
    go = tmp_path / "go"
    # each reads its version's files once both are running (so their reads overlap), then exits
    script = textwrap.dedent('''
        import os, sys, time
        version, ready, go = sys.argv[1:4]
        open(ready, "w").close()
        while not os.path.exists(go):
            time.sleep(0.01)
        for rel in ("a.txt", "d/0.bin", "d/1.bin"):
            with open(os.path.join(version, rel), "rb") as f:
                f.read()
    ''')
    (tmp_path / "two.py").write_text(script)
    started = []
    for n in (0, 1):
        ready = tmp_path / f"ready{n}"
        started.append((n, *_artfs_run(store, sys.executable, str(tmp_path / "two.py"), str(art / f"v{n}"),
                                       str(ready), str(go))))
    eventually(lambda: all((tmp_path / f"ready{n}").exists() for n in (0, 1)), timeout=60, what="both runs")
    go.touch()
    for _, _, proc in started:
        _finish(proc)
    repo = fresh_repo(store, tmp_path / "check-cache")
    try:
        for n, run_id, _ in started:
            expected = (3, sum(sizes[n][f] for f in ("a.txt", "d/0.bin", "d/1.bin")))
            _wait_inputs(repo, run_id, {f"animals:v{n}": expected})
    finally:
        repo.close()


def test_a_seal_by_a_run_is_its_output_and_unchanged_staging_files_are_inputs(mount_artfs, three_versions, tmp_path):
    store, sizes = three_versions
    m = mount_artfs(store)
    st = m.path / "animals" / "staging"
    (st / "new.txt").write_text("made outside the run\n")  # staged by anyone: the seal decides the output
    seal = shlex.join(artfs_cmd("seal", str(st), "-m", "by the run"))
    # an unchanged file read through staging/ counts for the staging area's base (v2); one written does not
    q = shlex.quote(str(st))
    cmd = f"cat {q}/a.txt {q}/new.txt >/dev/null && echo x >> {q}/b.txt && {seal}"
    run_id, proc = _artfs_run(store, "sh", "-c", cmd)
    _finish(proc)
    repo = fresh_repo(store, tmp_path / "check-cache")
    try:
        rec = repo.version("animals", 3)
        assert rec.run == run_id and rec.message == "by the run"
        assert runs.run_info(repo, run_id).outputs == [("animals", 3)]
        assert os.getxattr(m.path / "animals" / "v3", "user.artfs.run") == run_id.encode()
        assert "user.artfs.run" not in os.listxattr(m.path / "animals" / "v2")  # made outside any run
        _wait_inputs(repo, run_id, {"animals:v2": (1, sizes[2]["a.txt"])})
    finally:
        repo.close()
    # a seal from outside any run names no run
    (st / "later.txt").write_text("x")
    run_artfs("seal", str(st))
    repo = fresh_repo(store, tmp_path / "check-cache2")
    try:
        assert repo.version("animals", 4).run is None
    finally:
        repo.close()


# --- the writer alone (no FUSE): what reaches the store, and when ------------------------------------


def test_the_writer_coalesces_opens_into_few_growing_snapshots(local_store_uri, tmp_path, monkeypatch):
    src = tmp_path / "src"
    sizes = _write_version(src, 0)
    commit(local_store_uri, src, "animals", tmp_path / "writer-cache")
    monkeypatch.setattr(run_capture, "FIRST_DELAY", 0.05)
    monkeypatch.setattr(run_capture, "UPDATE_EVERY", 0.3)
    repo = fresh_repo(local_store_uri, tmp_path / "cache")
    places = Places.under(str(tmp_path / "home"))
    run_id = runs.start_run(repo).id
    capture = run_capture.Capture(repo, places, "test-source")
    me = os.getpid()

    def counts() -> dict[str, tuple[int, int]]:
        return {i.ref: (i.files, i.bytes) for i in runs.run_info(repo, run_id).inputs}

    async def settled(expected: dict[str, tuple[int, int]]) -> None:
        with trio.fail_after(10):
            while await trio.to_thread.run_sync(counts) != expected:
                await trio.sleep(0.05)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(capture.serve)
            capture.opened(me, "animals", 0, "a.txt", sizes["a.txt"])  # no run yet: nothing
            with run_registry.register(places, run_id, repo.store.uri):
                rec = repo.version("animals", 0)
                for _ in range(100):  # one file opened 100 times is one file
                    capture.opened(me, "animals", 0, "b.txt", sizes["b.txt"], rec)
                capture.opened(me, "animals", 0, "c.txt", sizes["c.txt"])  # no record at hand: the writer reads it
                await settled({"animals:v0": (2, sizes["b.txt"] + sizes["c.txt"])})
                capture.opened(me, "animals", 0, "d/0.bin", sizes["d/0.bin"], rec)
            # the run ended: its last counts go out at once, and what it read is forgotten here
            await settled({"animals:v0": (3, sizes["b.txt"] + sizes["c.txt"] + sizes["d/0.bin"])})
            with trio.fail_after(10):
                while capture._uses:
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()

    try:
        trio.run(main)
        snapshots = list(repo.store.list(run_inputs_prefix(run_id)))
        assert len(snapshots) == 2  # not one per open
    finally:
        repo.close()
