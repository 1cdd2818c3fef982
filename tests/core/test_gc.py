"""Garbage collection (core/gc.py, core/gc_guard.py): unreferenced packs are condemned, then deleted a margin
later; referenced ones never; orphans of failed commits go; a writer that reuses a condemned pack uploads
its content again and its version reads back; two collectors at once and a collector killed anywhere lose
nothing. Time is injected: the collector's clock (wall) and the writers' guard clock (monotonic) are
moved forward instead of slept through."""

from __future__ import annotations

import json
import random
import threading
import time

import pytest

from artfs.core import lifecycle
from artfs.core.commit import Committer, commit_tree
from artfs.core.export import export_version
from artfs.core.gc import LEASE_TTL, GcBusy, GcReport, Lease, _cycle, collect
from artfs.core.gc_guard import PackGuard, set_margin
from artfs.core.manifest_file import ManifestFile
from artfs.core.staging.area import StagingArea
from artfs.core.store_keys import CONDEMNED, PACKS, STAGING_LEASES, parse_pack_key
from artfs.storage.store import WrappingStore
from tests.support.cli import run_artfs
from tests.support.repos import fresh_repo
from tests.support.trees import snapshot, write_tree

M = 60.0  # the margin in these tests (seconds of injected time)
DAY = 86400.0


class Clock:
    """Wall-clock time shifted by `offset`: tests move time forward without sleeping."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def _packs(store) -> set[str]:
    return {p for k in store.list(PACKS) if (p := parse_pack_key(k))}


def _condemned(store) -> set[str]:
    return {k[len(CONDEMNED):] for k in store.list(CONDEMNED)}


def _version_packs(repo, rec) -> set[str]:
    with ManifestFile(repo.manifest_file(rec.manifest), rec.manifest) as mf:
        return set(mf.header.packs)


def _reads_back(store_uri, tmp_path, rec, expected, tag="check") -> None:
    """A machine that never saw it exports the version: byte-exact."""
    reader = fresh_repo(store_uri, tmp_path / f"cache-{tag}")
    try:
        dest = tmp_path / f"out-{tag}"
        export_version(reader, rec, str(dest))
        assert snapshot(dest) == expected
    finally:
        reader.close()


def _tree(path, seed: int, files: int = 3, size: int = 200_000) -> dict:
    rnd = random.Random(seed)
    content = {f"f{i}.bin": rnd.randbytes(size) for i in range(files)}
    write_tree(path, content)
    return snapshot(path)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def repo_m(repo):
    set_margin(repo.store, M, immediate=True)
    return repo


def _gc(repo, clock, **kw):
    return collect(repo, clock=clock, **kw)


def test_unreferenced_condemned_then_deleted_referenced_never(repo_m, tmp_path, clock, store_uri):
    repo = repo_m
    live_tree = _tree(tmp_path / "a", 1)
    live = commit_tree(repo, str(tmp_path / "a"), "ds").record
    _tree(tmp_path / "b", 2)
    doomed = commit_tree(repo, str(tmp_path / "b"), "ds").record
    keep, drop = _version_packs(repo, live), _version_packs(repo, doomed)
    assert keep and drop and not keep & drop
    lifecycle.delete(repo, "ds:v1", now=clock())

    r = _gc(repo, clock)  # within the retention window: still restorable, so kept
    assert r.condemned_packs == 0 and _packs(repo.store) >= keep | drop

    clock.advance(repo.retention_window() + M + 1)
    r = _gc(repo, clock)
    assert _condemned(repo.store) == drop and r.condemned_packs == len(drop) and r.deleted_packs == 0
    r = _gc(repo, clock)  # condemned less than a margin ago: waits
    assert r.waiting_packs == len(drop) and _packs(repo.store) >= drop

    clock.advance(M + 1)
    r = _gc(repo, clock)
    assert r.deleted_packs == len(drop) and r.freed_bytes > 0
    assert _packs(repo.store) == keep and not _condemned(repo.store)
    for _ in range(3):
        clock.advance(M + 1)
        assert _gc(repo, clock).condemned_packs == 0
    assert _packs(repo.store) == keep
    _reads_back(store_uri, tmp_path, live, live_tree)


def test_orphan_of_failed_commit_collected(repo_m, tmp_path, clock):
    repo = repo_m
    _tree(tmp_path / "a", 3)
    committer = Committer(repo, "ds")
    committer.add_file("x.bin", str(tmp_path / "a" / "f0.bin"), 0o644, 0, 200_000)
    committer.build()  # the pack is uploaded; the claim never happens (a crash, a refused merge)
    committer.close()
    orphans = _packs(repo.store)
    assert len(orphans) == 1

    assert _gc(repo, clock).condemned_packs == 0  # younger than the margin: maybe a commit in flight
    clock.advance(M + 1)
    assert _gc(repo, clock).condemned_packs == 1
    clock.advance(M + 1)
    r = _gc(repo, clock)
    assert r.deleted_packs == 1 and not _packs(repo.store)


def test_writer_reusing_a_condemned_pack_uploads_again(repo_m, tmp_path, clock, store_uri):
    """Machine A reuses chunks of a pack (its parent's) while gc condemns that pack: before its claim, the
    check finds the pack condemned, uploads the content afresh, and the version reads back after gc has
    deleted the old pack."""
    repo = repo_m
    tree = _tree(tmp_path / "a", 4)
    commit_tree(repo, str(tmp_path / "a"), "old")
    lifecycle.delete(repo, "old:v0", now=clock())
    old_packs = _packs(repo.store)

    mono = Clock()
    repo.guard = PackGuard(repo.store, repo.index, clock=mono)
    committer = Committer(repo, "new")
    for name in sorted(tree):
        committer.add_file(name, str(tmp_path / "a" / name), 0o644, 0, len(tree[name][2]))
    assert committer.reused_chunks > 0 and committer.new_chunks == 0  # deduped against old:v0's pack
    path, header = committer.build()

    clock.advance(repo.retention_window() + M + 1)
    assert _gc(repo, clock).condemned_packs == len(old_packs)
    mono.advance(M)  # the writer's listing is old: it lists gc/condemned/ again before claiming
    rec = repo.publish("new", "dataset", path, header)
    committer.close()
    assert rec is not None and not _version_packs(repo, rec) & old_packs

    clock.advance(M + 1)
    assert _gc(repo, clock).deleted_packs == len(old_packs)
    assert not _packs(repo.store) & old_packs
    _reads_back(store_uri, tmp_path, rec, tree)


def test_commit_does_not_dedup_against_condemned_or_missing_packs(repo_m, tmp_path, clock, store_uri):
    """A stale local known-chunk index offers chunks of condemned (then deleted) packs: the commit uploads
    their content again instead, and forgets them locally."""
    repo = repo_m
    tree = _tree(tmp_path / "a", 5)
    commit_tree(repo, str(tmp_path / "a"), "old")
    lifecycle.delete(repo, "old:v0", now=clock())
    clock.advance(repo.retention_window() + M + 1)
    _gc(repo, clock)  # condemned
    repo.guard = PackGuard(repo.store, repo.index)  # a fresh listing
    res = commit_tree(repo, str(tmp_path / "a"), "again")
    assert res.new_chunks > 0 and res.reused_chunks == 0
    clock.advance(M + 1)
    assert _gc(repo, clock).deleted_packs >= 1
    _reads_back(store_uri, tmp_path, res.record, tree)


def test_staging_lease_keeps_a_deleted_base(tmp_path, clock, local_store_uri):
    repo = fresh_repo(local_store_uri, tmp_path / "cache")
    try:
        set_margin(repo.store, M, immediate=True)
        tree = _tree(tmp_path / "a", 6)
        rec = commit_tree(repo, str(tmp_path / "a"), "ds").record
        area = StagingArea.open(repo, "ds")
        area._leases.clock = clock  # the lease's times in the test's time
        assert list(repo.store.list(STAGING_LEASES))
        lifecycle.delete_artifact(repo, "ds", now=clock())
        clock.advance(repo.retention_window() + M + 1)
        for _ in range(3):
            area.renew_lease()  # what the mount does at its polls
            assert _gc(repo, clock).condemned_packs == 0
            clock.advance(M + 1)
        assert _packs(repo.store) == _version_packs(repo, rec)
        assert area.read(area.lookup(1, "f0.bin").id, 0, 10) == tree["f0.bin"][2][:10]
        area.destroy()  # a discarded area: its lease goes, and with it the base's chunks
        assert not list(repo.store.list(STAGING_LEASES))
        _gc(repo, clock)
        clock.advance(M + 1)
        assert _gc(repo, clock).deleted_packs == 1 and not _packs(repo.store)
    finally:
        repo.close()


def test_two_collectors_at_once_lose_nothing(repo_m, tmp_path, clock, store_uri):
    """Three collectors without the lease, racing each other and a writer: every version reads back."""
    repo = repo_m
    trees = {}
    for i in range(3):
        trees[i] = _tree(tmp_path / f"t{i}", 10 + i, files=2, size=30_000)
        commit_tree(repo, str(tmp_path / f"t{i}"), "ds")
    lifecycle.delete(repo, "ds:v0", now=clock())
    clock.advance(repo.retention_window() + M + 1)
    errors = []

    def collector(k: int) -> None:
        machine = fresh_repo(store_uri, tmp_path / f"gc{k}")
        try:
            for _ in range(2):
                _cycle(machine, GcReport(False, M), None, clock)
        except Exception as e:  # noqa: BLE001
            errors.append(e)
        finally:
            machine.close()

    threads = [threading.Thread(target=collector, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    writer = fresh_repo(store_uri, tmp_path / "writer")
    try:
        new = commit_tree(writer, str(tmp_path / "t0"), "other").record  # reuses v0's content
    finally:
        writer.close()
    for t in threads:
        t.join()
    assert not errors
    clock.advance(M + 1)
    _gc(repo, clock)
    clock.advance(M + 1)
    _gc(repo, clock)
    for n in (1, 2):
        _reads_back(store_uri, tmp_path, repo.version("ds", n), trees[n], tag=f"v{n}")
    _reads_back(store_uri, tmp_path, new, trees[0], tag="other")


class Killed(BaseException):
    """The process died here."""


class DyingStore(WrappingStore):
    """Dies (raises Killed) at its `after`-th write or delete: every point where a gc can be killed."""

    def __init__(self, inner, after: int) -> None:
        super().__init__(inner)
        self.after = after
        self.writes = 0

    def _write(self):
        self.writes += 1
        if self.writes > self.after:
            raise Killed

    def put(self, key, data):
        self._write()
        super().put(key, data)

    def create_if_absent(self, key, data):
        self._write()
        return super().create_if_absent(key, data)

    def delete(self, key):
        self._write()
        super().delete(key)


def test_gc_killed_at_every_point_then_rerun(tmp_path, clock, local_store_uri):
    """Kill a collector at its k-th write, for every k, each time followed by a full rerun: the store stays
    consistent (kept versions read back) and two more cycles leave exactly the referenced packs."""
    setup = fresh_repo(local_store_uri, tmp_path / "setup")
    try:
        set_margin(setup.store, M, immediate=True)
        trees = {}
        for i in range(4):
            trees[i] = _tree(tmp_path / f"t{i}", 20 + i, files=2, size=50_000)
            commit_tree(setup, str(tmp_path / f"t{i}"), "ds")
        for n in (0, 2):
            lifecycle.delete(setup, f"ds:v{n}", now=clock())
        clock.advance(setup.retention_window() + M + 1)
        kept = {n: setup.version("ds", n) for n in (1, 3)}
        referenced = set().union(*(_version_packs(setup, r) for r in kept.values()))
    finally:
        setup.close()
    k = 0
    while True:
        dying = fresh_repo(local_store_uri, tmp_path / f"dying{k}")
        dying.store = DyingStore(dying.store, k)
        try:
            _gc(dying, clock)
            died = False
        except Killed:
            died = True
        finally:
            dying.close()
        clock.advance(LEASE_TTL + 1)  # the dead collector's lease lapses (same process: it looks alive)
        if not died:
            break
        k += 1
    assert k > 3  # the collector wrote several times: lease, condemnations, deletions, records
    repo = fresh_repo(local_store_uri, tmp_path / "after")
    try:
        for _ in range(2):
            clock.advance(M + LEASE_SLACK)
            _gc(repo, clock)
        assert _packs(repo.store) == referenced and not _condemned(repo.store)
        for n, rec in kept.items():
            _reads_back(local_store_uri, tmp_path, rec, trees[n], tag=f"v{n}")
    finally:
        repo.close()


LEASE_SLACK = 1.0


def test_gc_busy_is_one_line(tmp_path, local_store_uri, clock):
    repo = fresh_repo(local_store_uri, tmp_path / "cache")
    try:
        _tree(tmp_path / "a", 7, files=1, size=1000)
        commit_tree(repo, str(tmp_path / "a"), "ds")
        other = Lease(repo, clock)
        other.holder = "someone@elsewhere:1:abcd"
        other.acquire()
        with pytest.raises(GcBusy):
            collect(repo, clock=clock)
        res = run_artfs("gc", "--store", local_store_uri, check=False,
                        env={"ARTFS_CACHE": str(tmp_path / "cli-cache")})
        assert res.returncode != 0 and "another gc" in res.stderr and len(res.stderr.strip().splitlines()) == 1
        res = run_artfs("gc", "--store", local_store_uri, "--margin", "soon", check=False,
                        env={"ARTFS_CACHE": str(tmp_path / "cli-cache")})
        assert res.returncode != 0 and len(res.stderr.strip().splitlines()) == 1
        other.release()
        res = run_artfs("gc", "--store", local_store_uri, "--json", env={"ARTFS_CACHE": str(tmp_path / "cli-cache")})
        assert json.loads(res.stdout)["referenced_packs"] == 1
    finally:
        repo.close()


def test_dry_run_names_versions_and_changes_nothing(tmp_path, clock, local_store_uri):
    repo = fresh_repo(local_store_uri, tmp_path / "cache")
    set_margin(repo.store, M, immediate=True)
    _tree(tmp_path / "a", 8)
    commit_tree(repo, str(tmp_path / "a"), "ds")
    _tree(tmp_path / "b", 9)
    commit_tree(repo, str(tmp_path / "b"), "ds")
    lifecycle.delete(repo, "ds:v0", now=clock())
    clock.advance(repo.retention_window() + M + 1)
    before = sorted(repo.store.list(""))
    r = _gc(repo, clock, dry_run=True)
    assert sorted(repo.store.list("")) == before
    assert r.condemned_packs == 1 and list(r.by_version()) == ["ds:v0"]
    assert r.by_version()["ds:v0"]["condemn"] > 0
    assert r.as_json()["unreferenced"][0]["versions"] == ["ds:v0"]
    repo.close()


def _race_create(store, rounds: int = 3, racers: int = 12) -> list[int]:
    """Winners per round of `racers` threads calling create_if_absent on one key at once."""

    def racer(i: int, key: str, barrier: threading.Barrier, wins: list[bool]) -> None:
        barrier.wait()
        wins.append(store.create_if_absent(key, f"writer {i}".encode()))

    out = []
    for round_ in range(rounds):
        wins: list[bool] = []
        barrier = threading.Barrier(racers)
        threads = [threading.Thread(target=racer, args=(i, f"race/{round_}", barrier, wins)) for i in range(racers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        out.append(wins.count(True))
    return out


def test_s3_conditional_create_has_one_winner(s3_store_uri, monkeypatch):
    """The test S3 server serializes conditional PUTs (tests/support/s3server_main.py), as S3 does: with
    moto's check-then-store window widened, stock moto lets several racers win, ours exactly one."""
    from artfs.storage.open import open_store
    from tests.support.s3server import S3Server, s3_env

    store = open_store(s3_store_uri)
    try:
        assert _race_create(store) == [1, 1, 1]
    finally:
        store.close()
    monkeypatch.setenv("ARTFS_TEST_S3_CREATE_DELAY", "0.2")
    for stock in (True, False):
        with S3Server(stock=stock) as server:
            for name, value in s3_env(server.endpoint).items():
                monkeypatch.setenv(name, value)
            store = open_store(f"s3://{server.create_bucket('race')}/p")
            try:
                winners = _race_create(store, rounds=1, racers=6)
            finally:
                store.close()
        assert winners == ([6] if stock else [1]), (stock, winners)



def test_a_shorter_margin_applies_to_collectors_only_after_the_old_one(tmp_path, local_store_uri):
    """Writers that read the old margin may wait half of it between their check and their claim: a collector
    keeps the old margin for as long as it was."""
    from artfs.core.gc_guard import DEFAULT_MARGIN, collector_margin, writer_margin

    repo = fresh_repo(local_store_uri, tmp_path / "cache")
    try:
        assert collector_margin(repo.store, 0.0) == writer_margin(repo.store) == DEFAULT_MARGIN
        set_margin(repo.store, 10.0, now=1000.0)
        assert writer_margin(repo.store) == 10.0
        assert collector_margin(repo.store, 1000.0 + DEFAULT_MARGIN - 1) == DEFAULT_MARGIN
        assert collector_margin(repo.store, 1000.0 + DEFAULT_MARGIN + 1) == 10.0
        later = 1000.0 + DEFAULT_MARGIN + 10
        set_margin(repo.store, 7200.0, now=later)  # longer: in force at once
        assert collector_margin(repo.store, later) == 7200.0
    finally:
        repo.close()


def test_cli_dry_run_lists_bytes_per_version(tmp_path, local_store_uri, clock):
    repo = fresh_repo(local_store_uri, tmp_path / "cache")
    try:
        set_margin(repo.store, 1.0, immediate=True)
        _tree(tmp_path / "a", 30, files=1, size=5000)
        commit_tree(repo, str(tmp_path / "a"), "ds")
        _tree(tmp_path / "a", 31, files=1, size=5000)
        commit_tree(repo, str(tmp_path / "a"), "ds")
        lifecycle.delete(repo, "ds:v0")
        from artfs.core import store_format

        store_format.set_retention(repo.store, 0.0)
    finally:
        repo.close()
    time.sleep(1.1)  # the packs are a margin old
    env = {"ARTFS_CACHE": str(tmp_path / "cli-cache")}
    out = run_artfs("gc", "--dry-run", "--store", local_store_uri, env=env).stdout
    assert "ds:v0" in out and "condemned now" in out and "dry run: would free 0 packs" in out
    out = run_artfs("gc", "--store", local_store_uri, env=env).stdout
    assert out.startswith("freed 0 packs") and "condemned 1" in out
    time.sleep(1.1)
    out = run_artfs("gc", "--store", local_store_uri, env=env).stdout
    assert out.startswith("freed 1 packs")


def test_compaction_moves_live_chunks_and_frees_the_rest(tmp_path, clock, store_uri):
    """v0 has ten files, v1 keeps one of them; v0 goes. --compact moves v1's chunk out of v0's pack (a
    relocation), the old pack is then collected, and v1 reads back through the relocation. A writer that
    adopts a chunk the compaction did not move (it was dead) keeps the old pack needed until it moved too."""
    from artfs.core.verify import verify

    repo = fresh_repo(store_uri, tmp_path / "cache")
    try:
        set_margin(repo.store, M, immediate=True)
        full = _tree(tmp_path / "v0", 40, files=10, size=40_000)
        commit_tree(repo, str(tmp_path / "v0"), "ds")
        old = _packs(repo.store)
        for i in range(1, 10):
            (tmp_path / "v0" / f"f{i}.bin").unlink()
        kept_tree = snapshot(tmp_path / "v0")
        v1 = commit_tree(repo, str(tmp_path / "v0"), "ds").record
        assert _version_packs(repo, v1) == old  # deduped: one live file of ten in the pack
        lifecycle.delete(repo, "ds:v0", now=clock())
        clock.advance(repo.retention_window() + M + 1)

        dry = _gc(repo, clock, compact=True, dry_run=True)
        assert dry.compacted_packs == 1 and not _condemned(repo.store)
        r = _gc(repo, clock, compact=True)
        assert r.compacted_packs == 1 and 0 < r.compacted_bytes < 0.3 * r.compacted_of
        assert r.condemned_packs == 0 and _packs(repo.store) > old

        # A stale machine still knows v0's chunks and reuses a dead one (not moved) in a new version.
        stale = fresh_repo(store_uri, tmp_path / "stale")
        try:
            stale.index.add_chunks(ref for e in repo.entries(repo.version("ds", 0))[1]
                                   for ref in e.refs(repo.entries(repo.version("ds", 0))[0].packs))
            write_tree(tmp_path / "w", {"again.bin": full["f5.bin"][2]})
            adopted = commit_tree(stale, str(tmp_path / "w"), "other").record
        finally:
            stale.close()
        assert _version_packs(repo, adopted) == old

        clock.advance(M + 1)
        r = _gc(repo, clock, compact=True)  # the adopted chunk moves now; the old pack is still needed
        assert r.compacted_packs == 1 and r.condemned_packs == 0
        clock.advance(M + 1)
        r = _gc(repo, clock, compact=True)
        assert r.condemned_packs == 1 and _condemned(repo.store) == old
        clock.advance(M + 1)
        r = _gc(repo, clock, compact=True)
        assert r.deleted_packs == 1 and not _packs(repo.store) & old

        _reads_back(store_uri, tmp_path, v1, kept_tree, tag="v1")
        _reads_back(store_uri, tmp_path, adopted, snapshot(tmp_path / "w"), tag="adopted")
        report = verify(repo, [v1, adopted])
        assert not report.broken
        clock.advance(M + 1)  # relocations stay while kept versions name the old pack
        _gc(repo, clock, compact=True)
        _reads_back(store_uri, tmp_path, v1, kept_tree, tag="v1-again")
    finally:
        repo.close()
