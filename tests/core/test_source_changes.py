"""A source that changes while `put` reads it: the put fails with one line naming the file and publishes
nothing, or publishes exactly one state of the file — never a chunk that does not match its digest, a
torn file, a poisoned dedup source, or a process killed by SIGBUS.

The exact cases change the file between two chunks of one read (no clock involved); the races rewrite and
truncate a 64 MiB file at random moments during `artfs put` in a subprocess, as a user's job would
(ARTFS_STRESS=1 runs 20 of each, the default a short form).
"""

from __future__ import annotations

import os
import random
import threading
import time

import pytest

from artfs.core.chunker import MIN_CHUNK, SourceChanged, cut, digest, read_chunks
from artfs.core.commit import commit_tree
from artfs.core.export import export_version
from tests.support.cli import run_artfs

MiB = 1 << 20
ROUNDS = 20 if os.environ.get("ARTFS_STRESS") else 4


def _file(tmp_path, size: int, name: str = "f.bin") -> tuple[str, bytes]:
    data = random.Random(size).randbytes(size)
    path = str(tmp_path / name)
    with open(path, "wb") as f:
        f.write(data)
    return path, data


def test_chunks_are_the_cuts_of_the_bytes(tmp_path) -> None:
    for size in (0, 1, MIN_CHUNK, MIN_CHUNK + 1, 9 * MiB + 7):
        path, data = _file(tmp_path, size, f"{size}.bin")
        assert [digest(c) for c in read_chunks(path)] == [digest(c) for c in cut(data)]


@pytest.mark.parametrize("change", ["rewrite", "truncate", "grow"])
def test_a_change_between_chunks_is_caught(tmp_path, change: str) -> None:
    path, _ = _file(tmp_path, 12 * MiB)
    chunks = read_chunks(path, os.lstat(path))
    next(chunks)
    with open(path, "r+b") as f:
        if change == "rewrite":
            f.seek(8 * MiB)
            f.write(os.urandom(MiB))
        elif change == "truncate":
            f.truncate(3 * MiB)
        else:
            f.seek(0, os.SEEK_END)
            f.write(b"more")
    with pytest.raises(SourceChanged, match="f.bin changed") as exc:
        for _ in chunks:
            pass
    assert "\n" not in str(exc.value)


def test_a_file_replaced_after_the_walk_is_caught(tmp_path) -> None:
    path, _ = _file(tmp_path, MiB)
    walked = os.lstat(path)
    os.replace(_file(tmp_path, MiB, "other.bin")[0], path)
    with pytest.raises(SourceChanged, match="replaced or written"):
        list(read_chunks(path, walked))


def test_commit_of_a_changing_file_publishes_nothing(repo, tmp_path, monkeypatch) -> None:
    src = tmp_path / "src"
    src.mkdir()
    path, _ = _file(src, 12 * MiB)
    real = read_chunks

    def rewritten_midway(source, expect=None, size=None):
        for i, chunk in enumerate(real(source, expect, size)):
            if i == 1:
                with open(path, "r+b") as f:
                    f.seek(10 * MiB)
                    f.write(os.urandom(MiB))
            yield chunk

    monkeypatch.setattr("artfs.core.commit.read_chunks", rewritten_midway)
    with pytest.raises(SourceChanged):
        commit_tree(repo, str(src), "animals")
    assert repo.version_numbers("animals") == []


def _race(tmp_path, store: str, change: str) -> list[str]:
    """`artfs put` of a 64 MiB file while another thread changes it; returns what each round ended in."""
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    path, original = _file(src, 64 * MiB)
    outcomes = []
    rng = random.Random(7)
    for round_ in range(ROUNDS):
        with open(path, "wb") as f:
            f.write(original)
        states = [original]

        def meddle(states: list[bytes] = states) -> None:
            time.sleep(rng.uniform(0, 0.3))
            with open(path, "r+b") as f:
                if change == "rewrite":
                    new = bytearray(original)
                    new[8 * MiB : 16 * MiB] = os.urandom(8 * MiB)
                    f.seek(8 * MiB)
                    f.write(new[8 * MiB : 16 * MiB])
                    states.append(bytes(new))
                else:
                    f.truncate(20 * MiB)
                    states.append(original[: 20 * MiB])

        t = threading.Thread(target=meddle)
        t.start()
        res = run_artfs("put", str(src), "animals", "--store", store, "--json", check=False)
        t.join()
        assert res.returncode in (0, 1), f"round {round_}: exit {res.returncode} (a signal?): {res.stderr}"
        if res.returncode == 1:
            assert res.stderr.strip().count("\n") == 0 and "changed" in res.stderr, res.stderr
            outcomes.append("refused")
            continue
        dest = tmp_path / f"out{round_}"
        run_artfs("get", "animals:latest", str(dest), "--store", store)  # every chunk verified
        with open(dest / "f.bin", "rb") as f:
            got = f.read()
        assert got in states, f"round {round_}: a torn file ({len(got)} bytes, neither state)"
        outcomes.append("published")
    return outcomes


@pytest.mark.parametrize("change", ["rewrite", "truncate"])
def test_put_racing_a_writer(tmp_path, change: str) -> None:
    store = str(tmp_path / "store")
    outcomes = _race(tmp_path, store, change)
    assert len(outcomes) == ROUNDS
    # No poisoned dedup: the untouched original, put again (same cache, another artifact and this one),
    # is published readable and exact.
    clean = tmp_path / "clean"
    clean.mkdir()
    path, original = _file(clean, 64 * MiB)
    for name in ("animals", "other"):
        run_artfs("put", str(clean), name, "--store", store)
        out = tmp_path / f"clean-{name}"
        run_artfs("get", f"{name}:latest", str(out), "--store", store)
        assert (out / "f.bin").read_bytes() == original


def test_export_reads_what_was_published(repo, tmp_path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    _, data = _file(src, 5 * MiB)
    rec = commit_tree(repo, str(src), "animals").record
    assert rec is not None
    export_version(repo, rec, str(tmp_path / "out"))
    assert (tmp_path / "out" / "f.bin").read_bytes() == data
