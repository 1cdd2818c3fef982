"""Two mounts (two daemons, two cache dirs, one S3 store) sealing the same artifact at once: both publish
and disjoint changes are merged; the same path changed on both sides is refused with the path list, and
--force takes the staged side."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

from tests.support.cli import artfs_cmd, run_artfs, seal
from tests.support.polling import wait_for_path
from tests.support.repos import commit
from tests.support.trees import snapshot


def _seal_both(a: Path, b: Path) -> list[tuple[int, str, str]]:
    """`artfs seal --json` of both staging directories at the same moment."""
    procs = [subprocess.Popen(artfs_cmd("seal", str(p), "--json"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for p in (a, b)]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=180)
        out.append((p.returncode, stdout, stderr))
    return out


def test_two_mounts_seal_the_same_artifact(mount_artfs, s3_store_uri, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("shared.txt", "x.txt", "y.txt", "z.txt"):
        (src / name).write_text(f"{name} v0\n")
    commit(s3_store_uri, src, "animals", tmp_path / "writer-cache")
    ma = mount_artfs(s3_store_uri, cache_dir=tmp_path / "cache-a")
    mb = mount_artfs(s3_store_uri, cache_dir=tmp_path / "cache-b")
    sa, sb = ma.path / "animals" / "staging", mb.path / "animals" / "staging"

    # disjoint changes: both publish, and the later version holds both sides
    (sa / "x.txt").write_text("x from a\n")
    (sa / "from-a.bin").write_bytes(b"a" * 100_000)
    (sb / "y.txt").write_text("y from b\n")
    (sb / "dir-b").mkdir()
    (sb / "dir-b" / "from-b.txt").write_text("b\n")
    results = _seal_both(sa, sb)
    assert [r[0] for r in results] == [0, 0], results
    refs = sorted(json.loads(r[1])["ref"] for r in results)
    assert refs == ["animals:v1", "animals:v2"]
    v2 = ma.path / "animals" / "v2"
    wait_for_path(v2, 30)  # b's version reaches a's mount by its poll
    merged = {"shared.txt": "shared.txt v0\n", "x.txt": "x from a\n", "y.txt": "y from b\n", "z.txt": "z.txt v0\n",
              "dir-b/from-b.txt": "b\n"}
    for rel, text in merged.items():
        assert (v2 / rel).read_text() == text, rel
    assert (v2 / "from-a.bin").read_bytes() == b"a" * 100_000
    # each staging is now a fresh view of what it published; let both follow the merged latest
    wait_for_path(mb.path / "animals" / "v2", 30)
    deadline = time.monotonic() + 30
    while snapshot(sa) != snapshot(v2) or snapshot(sb) != snapshot(v2):
        assert time.monotonic() < deadline, "an untouched staging did not follow latest"
        time.sleep(0.2)

    # the same path on both sides: one publishes, the other is refused with the path; --force takes ours
    (sa / "shared.txt").write_text("shared from a\n")
    (sa / "z.txt").unlink()
    (sb / "shared.txt").write_text("shared from b\n")
    (sb / "only-b.txt").write_text("only b\n")
    results = _seal_both(sa, sb)
    codes = [r[0] for r in results]
    assert sorted(codes) == [0, 1], results
    loser = codes.index(1)
    loser_staging = sb if loser == 1 else sa
    assert "shared.txt" in results[loser][2] and "--force" in results[loser][2]
    assert "shared.txt" in [c["path"] for c in json.loads(
        subprocess.run(artfs_cmd("status", str(loser_staging), "--json"), capture_output=True, text=True,
                       check=True).stdout)["changes"]]  # refused: the staged changes are intact
    forced = seal(loser_staging, "--force")
    assert forced["ref"] == "animals:v4"
    mount = ma if loser_staging == sa else mb
    v4 = mount.path / "animals" / "v4"
    forced_side = "shared from a\n" if loser_staging == sa else "shared from b\n"
    assert (v4 / "shared.txt").read_text() == forced_side
    assert not (v4 / "z.txt").exists() and (v4 / "only-b.txt").read_text() == "only b\n"  # and the rest merged


def test_put_with_base_racing_seals_loses_nothing(mount_artfs, s3_store_uri, tmp_path):
    """A mount seals new files round after round while a CLI job does `get latest`, adds a file and
    `put --base` what it got: in the end latest holds every file either side ever added."""
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "seed.txt").write_text("seed")
    commit(s3_store_uri, seed, "animals", tmp_path / "writer")
    m = mount_artfs(s3_store_uri, poll="1s")
    st = m.path / "animals" / "staging"
    rounds = 10 if os.environ.get("ARTFS_STRESS") else 3
    added = []
    errors: list[BaseException] = []

    def sealer() -> None:
        try:
            for i in range(rounds):
                (st / f"sealed-{i}.txt").write_text(f"sealed {i}")
                seal(st, "-m", f"seal {i}")
                added.append(f"sealed-{i}.txt")
        except BaseException as e:  # noqa: BLE001 - reported by the test thread
            errors.append(e)

    t = threading.Thread(target=sealer)
    t.start()
    for i in range(rounds):
        work = tmp_path / f"work{i}"
        res = run_artfs("get", "animals:latest", str(work), "--store", s3_store_uri, "--json")
        base = json.loads(res.stdout)["ref"]  # the version this job's copy is, whatever latest is by now
        (work / f"put-{i}.txt").write_text(f"put {i}")
        run_artfs("put", str(work), "animals", "--store", s3_store_uri, "--base", base)
        added.append(f"put-{i}.txt")
    t.join(300)
    assert not errors, errors
    final = tmp_path / "final"
    run_artfs("get", "animals:latest", str(final), "--store", s3_store_uri)
    assert sorted(added) == sorted(p.name for p in final.iterdir() if p.name != "seed.txt")
