"""`artfs put DIR NAME --base REF`: DIR is REF plus the user's changes, merged onto latest like a seal — so a
put racing other writers never silently drops what they published. Without --base a put is a snapshot,
and says so."""

from __future__ import annotations

import json
import subprocess

from tests.support.cli import artfs_cmd, run_artfs
from tests.support.trees import snapshot, write_tree


def _put(store, src, *args, check=True):
    return run_artfs("put", str(src), "animals", "--store", store, *args, check=check)


def _tree(store, ref, dest):
    run_artfs("get", ref, str(dest), "--store", store)
    return snapshot(dest)


def test_changes_since_base_are_merged_onto_latest(tmp_path) -> None:
    store = str(tmp_path / "store")
    write_tree(tmp_path / "v0", {"a.txt": b"a", "b.txt": b"b"})
    res = _put(store, tmp_path / "v0")
    assert "exactly the tree of" in res.stdout  # a snapshot, and it says so
    run_artfs("get", "animals:v0", str(tmp_path / "mine"), "--store", store)  # my working copy
    write_tree(tmp_path / "theirs", {"a.txt": b"a", "b.txt": b"b", "theirs.txt": b"t"})
    _put(store, tmp_path / "theirs")  # v1: someone else published meanwhile
    (tmp_path / "mine" / "mine.txt").write_bytes(b"m")
    (tmp_path / "mine" / "b.txt").unlink()
    res = _put(store, tmp_path / "mine", "--base", "v0", "-m", "my changes")
    assert res.stdout.splitlines()[0] == "animals:v2" and "merged onto latest" in res.stdout
    got = _tree(store, "animals:v2", tmp_path / "out")
    assert sorted(got) == ["a.txt", "mine.txt", "theirs.txt"]  # theirs kept, mine added, b deleted
    assert got["mine.txt"] == snapshot(tmp_path / "mine")["mine.txt"]


def test_conflicts_are_refused_and_listed_then_forced(tmp_path) -> None:
    store = str(tmp_path / "store")
    write_tree(tmp_path / "v0", {"a.txt": b"a", "same.txt": b"0"})
    _put(store, tmp_path / "v0")
    run_artfs("get", "animals:v0", str(tmp_path / "mine"), "--store", store)
    write_tree(tmp_path / "theirs", {"a.txt": b"a", "same.txt": b"theirs"})
    _put(store, tmp_path / "theirs")
    (tmp_path / "mine" / "same.txt").write_bytes(b"mine")
    res = _put(store, tmp_path / "mine", "--base", "animals:v0", check=False)
    assert res.returncode == 1 and res.stderr.strip().count("\n") == 0
    assert "same.txt" in res.stderr and "put with --force" in res.stderr
    versions = json.loads(run_artfs("ls", "animals", "--store", store, "--json").stdout)
    assert len(versions) == 2  # nothing published
    _put(store, tmp_path / "mine", "--base", "v0", "--force")
    got = _tree(store, "animals:latest", tmp_path / "out")
    assert got["same.txt"] == snapshot(tmp_path / "mine")["same.txt"]


def test_bad_base_is_one_line(tmp_path) -> None:
    store = str(tmp_path / "store")
    write_tree(tmp_path / "v0", {"a.txt": b"a"})
    _put(store, tmp_path / "v0")
    for args, why in ((("--base", "v7"), "v7"), (("--base", "zebras:v0"), "version of animals"),
                      (("--force",), "--force only applies with --base")):
        res = _put(store, tmp_path / "v0", *args, check=False)
        assert res.returncode != 0 and why in res.stderr and res.stderr.strip().count("\n") == 0, res.stderr


def test_puts_with_base_racing_each_other_lose_nothing(tmp_path) -> None:
    """Writers that all start from v0 and each add their own files, at once: the last version holds every
    writer's files, every version number is distinct."""
    store = str(tmp_path / "store")
    write_tree(tmp_path / "v0", {"seed.txt": b"s"})
    _put(store, tmp_path / "v0")
    writers = 4
    for w in range(writers):
        write_tree(tmp_path / f"w{w}", {"seed.txt": b"s", **{f"w{w}/{i}.txt": f"{w}-{i}".encode() for i in range(5)}})
    procs = [subprocess.Popen(artfs_cmd("put", str(tmp_path / f"w{w}"), "animals", "--store", store, "--base", "v0",
                                        "--json"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for w in range(writers)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out)["version"])
    assert sorted(results) == list(range(1, writers + 1))
    got = _tree(store, "animals:latest", tmp_path / "out")
    assert sorted(got) == sorted(["seed.txt", *(f"w{w}" for w in range(writers)),
                                  *(f"w{w}/{i}.txt" for w in range(writers) for i in range(5))])
