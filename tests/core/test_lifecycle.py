"""Soft delete, restore, TTLs, retention and the store format (core/lifecycle.py, tombstones.py,
store_format.py), on a directory store and on S3. The clock is injected (`now=`) wherever time matters."""

import os
import time

import msgspec
import pytest

from artfs.core import lifecycle
from artfs.core.catalog import scan
from artfs.core.commit import commit_tree
from artfs.core.repo import VersionDeleted
from artfs.core.store_format import DEFAULT_RETENTION, FORMAT_VERSION, UnsupportedFormat, set_retention
from artfs.core.store_keys import FORMAT, deleted_prefix
from artfs.errors import ArtfsError, Conflict, NotFound
from tests.support.repos import fresh_repo
from tests.support.trees import write_tree

DAY = 86400.0


@pytest.fixture
def local_repo(local_store_uri, tmp_path):
    """For rules the store kind cannot change (the S3 cases run where records are written and listed)."""
    r = fresh_repo(local_store_uri, tmp_path / "cache")
    yield r
    r.close()


def _put(repo, tmp_path, name, files, **kw):
    src = tmp_path / f"src-{name}-{len(os.listdir(tmp_path))}"
    write_tree(src, files)
    return commit_tree(repo, str(src), name, **kw).record


def _three(repo, tmp_path, name="animals"):
    return [_put(repo, tmp_path, name, {"f": f"{i}".encode() * 1000, "same": b"s" * 5000}) for i in range(3)]


def _events(repo, name):
    return list(repo.store.list(deleted_prefix(name)))


def test_delete_newest_moves_latest_and_numbers_are_not_reused(repo, tmp_path):
    _three(repo, tmp_path)
    res = lifecycle.delete(repo, "animals:v2")
    assert res.versions == [2] and res.latest == 1
    assert repo.resolve("animals").version == 1
    assert repo.resolve("animals:latest").version == 1
    with pytest.raises(VersionDeleted, match=r"v2 was deleted at .* restorable until .*artfs restore animals:v2"):
        repo.resolve("animals:v2")
    assert repo.require_artifact("animals") == [0, 1]
    assert repo.version_numbers("animals") == [0, 1, 2]  # the record stays
    rec = _put(repo, tmp_path, "animals", {"f": b"new"})
    assert rec.version == 3  # highest ever claimed + 1
    # a tree identical to the deleted v2 is a new version, not "unchanged": latest (v3) differs
    assert _put(repo, tmp_path, "animals", {"f": b"2" * 1000, "same": b"s" * 5000}).version == 4


def test_restore_and_ls_deleted(repo, tmp_path):
    _three(repo, tmp_path)
    lifecycle.delete(repo, "animals:v1")
    gone = lifecycle.deleted_versions(repo, "animals")
    assert [(d.record.version, d.restorable) for d in gone] == [(1, True)]
    assert gone[0].state.restorable_until == pytest.approx(gone[0].state.deleted_at + DEFAULT_RETENTION)
    assert [d.record.ref for d in lifecycle.deleted_versions(repo)] == ["animals:v1"]
    rec = lifecycle.restore(repo, "animals:v1")
    assert rec.version == 1 and repo.resolve("animals:v1").version == 1
    assert lifecycle.deleted_versions(repo, "animals") == []
    with pytest.raises(Conflict, match="not deleted"):
        lifecycle.restore(repo, "animals:v1")
    with pytest.raises(ArtfsError, match="animals:vN"):
        lifecycle.restore(repo, "animals:latest")


def test_restore_after_the_window_is_refused_and_writes_nothing(local_repo, tmp_path):
    repo = local_repo
    _three(repo, tmp_path)
    t0 = time.time()
    lifecycle.delete(repo, "animals:v0", now=t0)
    before = _events(repo, "animals")
    with pytest.raises(VersionDeleted, match="can no longer be restored"):
        lifecycle.restore(repo, "animals:v0", now=t0 + 8 * DAY)
    assert _events(repo, "animals") == before
    assert lifecycle.restore(repo, "animals:v0", now=t0 + 6 * DAY).version == 0


def test_retention_window_is_per_store(local_repo, tmp_path):
    repo = local_repo
    _three(repo, tmp_path)
    set_retention(repo.store, 3600.0)
    repo._format = None  # the repo caches format.json for a minute
    assert lifecycle.retention_window(repo) == 3600.0
    t0 = time.time()
    lifecycle.delete(repo, "animals:v0", now=t0)
    assert lifecycle.version_states(repo, "animals", now=t0)[0].restorable_until == pytest.approx(t0 + 3600)
    with pytest.raises(VersionDeleted, match="no longer"):
        lifecycle.restore(repo, "animals:v0", now=t0 + 3601)


def test_alias_rules(local_repo, tmp_path):
    repo = local_repo
    _three(repo, tmp_path)
    repo.set_alias("animals", "best", 1)
    before = _events(repo, "animals")
    with pytest.raises(Conflict, match="alias best points at"):
        lifecycle.delete(repo, "animals:v1")
    with pytest.raises(Conflict, match="alias best"):
        lifecycle.delete(repo, "animals:best")
    assert _events(repo, "animals") == before
    lifecycle.delete(repo, "animals:v2")  # `latest` is no user alias: deleting it moves latest
    res = lifecycle.delete(repo, "animals:best", delete_aliases=True)
    assert res.aliases_deleted == ["best"] and res.latest == 0
    assert repo.aliases("animals") == {}
    with pytest.raises(NotFound, match="no alias"):
        repo.resolve("animals:best")
    with pytest.raises(VersionDeleted):  # aliases never point at deleted versions
        repo.set_alias("animals", "prod", 2)


def test_delete_whole_artifact(repo, tmp_path):
    _three(repo, tmp_path)
    _put(repo, tmp_path, "other", {"x": b"1"})
    repo.set_alias("animals", "best", 1)
    res = lifecycle.delete_artifact(repo, "animals")
    assert res.versions == [0, 1, 2] and res.whole
    assert {n for n, v in repo.views().items() if v.latest is not None} == {"other"}
    with pytest.raises(VersionDeleted, match="every version of animals is deleted .*artfs restore animals:vN"):
        repo.resolve("animals")
    with pytest.raises(VersionDeleted):
        repo.resolve("animals:best")  # hidden, not gone: back when v1 is restored
    lifecycle.restore(repo, "animals:v1")
    assert repo.resolve("animals:best").version == 1 and repo.resolve("animals").version == 1
    with pytest.raises(Conflict, match="already deleted"):
        lifecycle.delete(repo, "animals:v0")
    # a new put continues the numbers
    assert _put(repo, tmp_path, "animals", {"f": b"again"}).version == 3


def test_ttl_expires_from_creation_with_an_injected_clock(repo, tmp_path):
    rec = _put(repo, tmp_path, "ckpt", {"f": b"a"}, ttl=30 * DAY)
    keep = _put(repo, tmp_path, "ckpt", {"f": b"b"})
    created = rec.created
    states = lifecycle.version_states(repo, "ckpt", now=created + DAY)
    assert lifecycle.is_live(states[0]) and states[0].expires_at == pytest.approx(created + 30 * DAY)
    states = lifecycle.version_states(repo, "ckpt", now=created + 31 * DAY)
    assert states[0].deleted_at == pytest.approx(created + 30 * DAY) and lifecycle.is_live(states[1])
    with pytest.raises(VersionDeleted):
        repo.resolve("ckpt:v0", now=created + 31 * DAY)
    # changeable later: none removes it, 90d moves it
    lifecycle.set_ttl(repo, "ckpt:v0", "none")
    assert lifecycle.is_live(lifecycle.version_states(repo, "ckpt", now=created + 400 * DAY)[0])
    _, expires = lifecycle.set_ttl(repo, "ckpt:v1", "90d")
    assert expires == pytest.approx(keep.created + 90 * DAY)
    assert repo.resolve("ckpt", now=keep.created + 91 * DAY).version == 0  # latest moves back


def test_ttl_waits_for_a_user_alias_to_move(local_repo, tmp_path):
    repo = local_repo
    _put(repo, tmp_path, "m", {"f": b"a"})
    _put(repo, tmp_path, "m", {"f": b"b"})
    repo.set_alias("m", "best", 0)
    lifecycle.set_ttl(repo, "m:v0", 0.001)  # expired at once, but held by `best`
    far = time.time() + 10 * DAY
    assert lifecycle.is_live(lifecycle.version_states(repo, "m", now=far)[0])
    assert repo.resolve("m:best").version == 0
    repo.set_alias("m", "best", 1)  # the alias moves: v0 goes now, restorable for the window from now
    moved = repo.alias_log("m")[-1].time
    state = lifecycle.version_states(repo, "m", now=far)[0]
    assert state.deleted_at == pytest.approx(moved)
    assert state.restorable_until == pytest.approx(moved + DEFAULT_RETENTION)


def test_ttl_set_in_the_past_takes_effect_now(local_repo, tmp_path):
    repo = local_repo
    _put(repo, tmp_path, "m", {"f": b"a"})
    t = time.time() + 5 * DAY
    _, expires = lifecycle.set_ttl(repo, "m:v0", "1d", now=t)
    assert expires == pytest.approx(t)
    state = lifecycle.version_states(repo, "m", now=t + 1)[0]
    assert state.deleted_at == pytest.approx(t) and state.restorable_until == pytest.approx(t + DEFAULT_RETENTION)


@pytest.mark.parametrize("bad", ["30", "d", "-1d", "0d", "30 days", "1y", ""])
def test_malformed_ttl(bad):
    with pytest.raises(lifecycle.InvalidTTL, match="invalid TTL"):
        lifecycle.parse_ttl(bad)


def test_parse_ttl():
    assert lifecycle.parse_ttl("30d") == 30 * DAY
    assert lifecycle.parse_ttl("12h") == 12 * 3600
    assert lifecycle.parse_ttl("2w") == 14 * DAY
    assert lifecycle.parse_ttl("none") is None


def test_kept_versions_for_gc(repo, tmp_path):
    _three(repo, tmp_path)
    _put(repo, tmp_path, "b", {"x": b"1"})
    t0 = time.time()
    lifecycle.delete(repo, "animals:v0", now=t0)
    refs = {r.ref for r in lifecycle.kept_versions(repo, now=t0 + DAY)}
    assert refs == {"animals:v0", "animals:v1", "animals:v2", "b:v0"}  # v0 is still restorable
    refs = {r.ref for r in lifecycle.kept_versions(repo, now=t0 + 8 * DAY)}
    assert refs == {"animals:v1", "animals:v2", "b:v0"}


def test_retain_plan_and_apply(local_repo, tmp_path):
    repo = local_repo
    for _ in range(4):
        _put(repo, tmp_path, "r", {"f": os.urandom(3000), "same": b"s" * 5000})
    repo.set_alias("r", "best", 0)
    plan = lifecycle.retain_plan(repo, "r", keep_last=2)
    assert plan.blocked == {0: ["best"]} and [r.version for r in plan.drop] == [1]
    with pytest.raises(Conflict, match=r"aliases point at v0 \(best\).*--keep-aliased"):
        lifecycle.apply_retain(repo, plan)
    assert _events(repo, "r") == []  # a plan, or a refused one, writes nothing
    plan = lifecycle.retain_plan(repo, "r", keep_last=2, keep_aliased=True)
    assert [r.version for r in plan.drop] == [1] and plan.keep == [0, 2, 3] and not plan.blocked
    assert 3000 <= plan.freed_bytes <= 3200  # v1's unique file (random: stored raw), not the shared one
    res = lifecycle.apply_retain(repo, plan)
    assert res is not None and res.versions == [1]
    assert repo.require_artifact("r") == [0, 2, 3]
    assert lifecycle.apply_retain(repo, lifecycle.retain_plan(repo, "r", 2, keep_aliased=True)) is None


def test_bad_input_writes_nothing(local_repo, tmp_path):
    repo = local_repo
    _put(repo, tmp_path, "a", {"f": b"x"})
    with pytest.raises(NotFound, match="v9 does not exist"):
        lifecycle.delete(repo, "a:v9")
    with pytest.raises(NotFound, match="does not exist"):
        lifecycle.delete(repo, "nothing:v0")
    with pytest.raises(NotFound):
        lifecycle.restore(repo, "a:v9")
    with pytest.raises(ArtfsError, match="artfs rm a"):
        lifecycle.delete(repo, "a")
    assert _events(repo, "a") == []
    assert not repo.store.exists(FORMAT)  # nothing needed a feature yet


def test_store_format_is_recorded_and_unknown_formats_refuse_writes(repo, tmp_path):
    _put(repo, tmp_path, "a", {"f": b"x"})
    assert not repo.store.exists(FORMAT)  # a plain put keeps a format-1 store
    lifecycle.delete(repo, "a:v0")
    fmt = msgspec.json.decode(repo.store.get(FORMAT))
    assert fmt["format"] == FORMAT_VERSION and fmt["features"] == ["tombstones"]
    lifecycle.restore(repo, "a:v0")
    repo.store.put(FORMAT, msgspec.json.encode({"format": 99, "features": ["tombstones", "warp"]}))
    repo._format = None
    with pytest.raises(UnsupportedFormat, match="uses format 99 with features warp.*upgrade artfs"):
        _put(repo, tmp_path, "a", {"f": b"y"})
    with pytest.raises(UnsupportedFormat):
        repo.set_alias("a", "best", 0)
    with pytest.raises(UnsupportedFormat):
        lifecycle.delete(repo, "a:v0")
    assert repo.require_artifact("a") == [0]  # reading stays allowed
    assert repo.resolve("a").version == 0


def test_concurrent_lifecycle_records_get_distinct_numbers(repo, tmp_path):
    _three(repo, tmp_path)
    other = fresh_repo(repo.store.uri, tmp_path / "cache2")
    try:
        lifecycle.delete(repo, "animals:v0")
        lifecycle.delete(other, "animals:v1")  # its own index never saw repo's record
        assert len(_events(repo, "animals")) == 2
        assert other.require_artifact("animals") == [2] == repo.require_artifact("animals")
    finally:
        other.close()


def test_catalog_scan_hides_deleted_versions_and_expired_ttls(repo, tmp_path):
    _three(repo, tmp_path)
    _put(repo, tmp_path, "gone", {"x": b"1"})
    repo.set_alias("animals", "best", 1)
    first = scan(repo)
    assert first["animals"].numbers == (0, 1, 2) and first["animals"].links() == {"latest": 2, "best": 1}
    lifecycle.delete(repo, "animals:best", delete_aliases=True)
    lifecycle.delete_artifact(repo, "gone")
    t = time.time()
    lifecycle.set_ttl(repo, "animals:v2", "1d", now=t)
    second = scan(repo, first, now=t)
    assert "gone" not in second
    assert second["animals"].numbers == (0, 2) and second["animals"].links() == {"latest": 2}
    later = scan(repo, second, now=t + 2 * DAY)  # nothing new in the store: the TTL expires by the clock
    assert later["animals"].numbers == (0,) and later["animals"].latest == 0
    assert later["animals"].events is second["animals"].events  # unchanged logs are not read again
