"""`artfs rm`, `restore`, `ls --deleted`, `ttl`, `retain`, `put --ttl` as a user runs them, and their bad
input: one line on stderr, a non-zero exit, nothing written. (The core rules, on S3 too:
tests/core/test_lifecycle.py.)"""

import json
import os
import subprocess

import pytest

from artfs.core.commit import commit_tree
from artfs.core.store_format import set_retention
from artfs.core.store_keys import ARTIFACTS
from artfs.storage.open import open_store
from tests.support.cli import artfs_cmd, run_artfs
from tests.support.repos import fresh_repo
from tests.support.trees import write_tree


def artfs(*args, check=True):
    return run_artfs(*args, check=check)


def fails(*args, match):
    p = artfs(*args, check=False)
    assert p.returncode != 0, p.stdout
    assert "Traceback" not in p.stderr, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert match in lines[0], lines[0]
    return p


def _keys(store):
    return sorted(open_store(store).list(""))


@pytest.fixture
def store(local_store_uri, tmp_path):
    """animals v0, v1 (best), v2 — made in-process: each CLI call is a subprocess, and they add up."""
    repo = fresh_repo(local_store_uri, tmp_path / "setup-cache")
    try:
        for i in range(3):
            src = tmp_path / f"src{i}"
            write_tree(src, {"f": os.urandom(2000), "same": b"s" * 4000})
            commit_tree(repo, str(src), "animals", aliases=("best",) if i == 1 else ())
    finally:
        repo.close()
    return local_store_uri


def test_rm_restore_and_ls_deleted(store):
    out = artfs("rm", "animals:v2", "--store", store).stdout
    assert "animals: deleted v2" in out and "latest is now v1" in out and "artfs restore" in out
    listing = artfs("ls", "animals", "--store", store).stdout
    assert "v2" not in listing and "latest" in listing.splitlines()[1]
    gone = json.loads(artfs("ls", "animals", "--deleted", "--json", "--store", store).stdout)
    assert [(g["ref"], g["restorable"]) for g in gone] == [("animals:v2", True)]
    p = fails("get", "animals:v2", "--store", store, match="animals:v2 was deleted at")
    assert "restorable until" in p.stderr and "artfs restore animals:v2" in p.stderr
    fails("diff", "animals:v1", "animals:v2", "--store", store, match="animals:v2 was deleted")
    assert "(it is latest again)" in artfs("restore", "animals:v2", "--store", store).stdout
    log = artfs("log", "animals", "--store", store).stdout
    assert "animals:v2 deleted" in log and "animals:v2 restored" in log


def test_rm_refused_while_an_alias_points_at_it(store):
    before = _keys(store)
    fails("rm", "animals:v1", "--store", store, match="alias best")
    assert _keys(store) == before
    out = json.loads(artfs("rm", "animals:best", "--delete-aliases", "--json", "--store", store).stdout)
    assert out["deleted"] == ["animals:v1"] and out["aliases_deleted"] == ["best"]


def test_rm_whole_artifact_needs_yes_off_a_terminal(store):
    before = _keys(store)
    p = subprocess.run(artfs_cmd("rm", "animals", "--store", store), capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, timeout=60, check=False)
    assert p.returncode != 0 and "needs --yes" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert _keys(store) == before
    assert "deleted v0, v1, v2" in artfs("rm", "animals", "--yes", "--store", store).stdout
    assert "animals" not in artfs("ls", "--store", store).stdout
    fails("get", "animals", "--store", store, match="every version of animals is deleted")


def test_ttl_and_put_ttl(store, tmp_path):
    src = tmp_path / "new"
    write_tree(src, {"x": b"1"})
    artfs("put", str(src), "animals", "--ttl", "30d", "--store", store)
    info = json.loads(artfs("ttl", "animals:v0", "90d", "--json", "--store", store).stdout)
    assert info["ttl"] == 90 * 86400 and info["expires"] > 0
    assert "no TTL" in artfs("ttl", "animals:v0", "none", "--store", store).stdout


def test_retain_dry_run_then_apply(store):
    before = _keys(store)
    out = artfs("retain", "animals", "--keep-last", "1", "--dry-run", "--store", store).stdout
    assert "animals:v0" in out and "would delete 1 version(s)" in out and "v1 (best)" in out
    assert _keys(store) == before  # a dry run writes nothing
    fails("retain", "animals", "--keep-last", "1", "--store", store, match="--keep-aliased")
    assert _keys(store) == before
    plan = json.loads(artfs("retain", "animals", "--keep-last", "1", "--keep-aliased", "--json",
                            "--store", store).stdout)
    assert plan["deleted"] == ["animals:v0"] and 1900 < plan["freed_bytes"] < 2200
    assert plan["keep"] == ["v1", "v2"]


BAD = [
    (("rm", "animals:v9"), "animals:v9 does not exist"),
    (("rm", "nothing:v0"), "does not exist"),
    (("restore", "animals:v1"), "is not deleted"),
    (("ttl", "animals:v0", "30 days"), "invalid TTL"),
    (("ttl", "animals:v0", "0d"), "invalid TTL"),
    (("retain", "animals", "--keep-last", "-1"), "--keep-last"),
    (("rm", "animals", "--delete-aliases", "--yes"), "--delete-aliases"),
    (("ls", "animals:v0", "--deleted"), "--deleted lists a whole artifact"),
]


def test_bad_input_is_one_line_and_writes_nothing(store, tmp_path):
    before = _keys(store)
    for args, match in BAD:
        fails(*args, "--store", store, match=match)
    src = tmp_path / "new"
    write_tree(src, {"x": b"1"})
    fails("put", str(src), "animals", "--ttl", "soon", "--store", store, match="invalid TTL 'soon'")
    assert _keys(store) == before


def test_restore_after_the_window_is_refused(store):
    artfs("rm", "animals:v0", "--store", store)
    assert "14 day(s)" in artfs("retention", "14d", "--store", store).stdout
    set_retention(open_store(store), 0.0)  # as if the window had passed
    before = [k for k in _keys(store) if k.startswith(ARTIFACTS)]
    fails("restore", "animals:v0", "--store", store, match="can no longer be restored")
    assert [k for k in _keys(store) if k.startswith(ARTIFACTS)] == before


def test_python_api(store, tmp_path):
    import artfs.api as api

    src = tmp_path / "api-src"
    write_tree(src, {"x": b"api"})
    res = api.put(str(src), "animals", store=store, ttl="30d")
    assert res.ref == "animals:v3"
    assert api.set_ttl("animals:v3", None, store=store) is None
    assert api.delete("animals:v3", store=store).latest == 2
    assert [v.version for v in api.versions("animals", store=store)] == [0, 1, 2]
    assert api.restore("animals:v3", store=store).version == 3
    assert api.resolve("animals", store=store).version == 3
