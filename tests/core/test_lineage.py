"""The lineage walk (core/lineage.py) on stores built with runs.py directly: up, down, depth, deleted and
missing nodes, a cycle a damaged store could hold, and what it costs in store requests."""

from __future__ import annotations

import itertools
import types
from collections.abc import Iterator

import pytest

from artfs.core import lifecycle, runs
from artfs.core.commit import commit_tree
from artfs.core.lineage import DELETED, DERIVED, INPUT, LIVE, MISSING, OUTPUT, RunNode, VersionNode, lineage
from artfs.core.places import Places
from artfs.core.records import VersionRecord
from artfs.core.repo import Repo
from artfs.errors import ArtfsError, InvalidName, NotFound
from artfs.storage.open import open_store
from artfs.storage.store import WrappingStore
from tests.support.repos import fresh_repo


class CountingStore(WrappingStore):
    """Records every LIST prefix and GET key (the test of "never read every run")."""

    def __init__(self, inner) -> None:
        super().__init__(inner)
        self.lists: list[str] = []
        self.gets: list[str] = []

    def list(self, prefix: str) -> Iterator[str]:
        self.lists.append(prefix)
        return super().list(prefix)

    def get(self, key: str) -> bytes:
        self.gets.append(key)
        return super().get(key)


def put(repo: Repo, tmp_path, name: str, content: bytes, run: str | None = None, aliases=()) -> VersionRecord:
    src = _tree(tmp_path, name, content)
    rec = commit_tree(repo, str(src), name, aliases=aliases, run=run).record
    assert rec is not None
    if run is not None:
        runs.record_output(repo, run, rec)
    return rec


class Chain(types.SimpleNamespace):
    animals: VersionRecord
    clean: VersionRecord
    model: VersionRecord
    pre: str
    train: str


def chain(repo: Repo, tmp_path) -> Chain:
    """animals:v0 → preprocess → clean:v0 → train → model:v0 (and an unrelated run)."""
    animals = put(repo, tmp_path, "animals", b"cats and dogs")
    pre = runs.start_run(repo, name="prep", job_type="preprocess", heartbeat=0).id
    runs.record_input(repo, pre, animals, "observed", 3, 13, "mount-a")
    clean = put(repo, tmp_path, "clean", b"clean cats", run=pre)
    runs.end_run(repo, pre, "finished", 0)
    train = runs.start_run(repo, name="fit", job_type="train", heartbeat=0).id
    runs.record_input(repo, train, clean, "declared", 1, 10, "api")
    model = put(repo, tmp_path, "model", b"weights", run=train, aliases=("best",))
    runs.end_run(repo, train, "failed", 3)
    runs.start_run(repo, name="unrelated", heartbeat=0)
    return Chain(animals=animals, clean=clean, model=model, pre=pre, train=train)


@pytest.fixture
def local_repo(tmp_path) -> Iterator[Repo]:
    r = fresh_repo(str(tmp_path / "store"), tmp_path / "cache")
    yield r
    r.close()


def ids(graph) -> set[str]:
    return set(graph.nodes)


def edges(graph) -> set[tuple[str, str, str]]:
    return {(e.source, e.target, e.kind) for e in graph.edges}


def test_up_down_both_from_versions_and_runs(repo, tmp_path):
    c = chain(repo, tmp_path)
    everything = {"version:animals:v0", f"run:{c.pre}", "version:clean:v0", f"run:{c.train}", "version:model:v0"}
    flow = {("version:animals:v0", f"run:{c.pre}", INPUT), (f"run:{c.pre}", "version:clean:v0", OUTPUT),
            ("version:clean:v0", f"run:{c.train}", INPUT), (f"run:{c.train}", "version:model:v0", OUTPUT)}

    up = lineage(repo, "model:latest", up=True, down=False)
    assert up.root == "version:model:v0" and ids(up) == everything and edges(up) == flow
    model = up.nodes["version:model:v0"]
    assert isinstance(model, VersionNode) and model.aliases == ("latest", "best") and model.run == c.train
    train = up.nodes[f"run:{c.train}"]
    assert isinstance(train, RunNode) and (train.name, train.job_type, train.status, train.exit_code) == (
        "fit", "train", "failed", 3)
    read = next(e for e in up.edges if e.target == f"run:{c.train}")
    assert (read.how, read.files, read.bytes) == ("declared", 1, 10)

    down = lineage(repo, "animals:v0", up=False, down=True)
    assert ids(down) == everything and edges(down) == flow
    observed = next(e for e in down.edges if e.source == "version:animals:v0")
    assert (observed.how, observed.files, observed.bytes) == ("observed", 3, 13)

    assert ids(lineage(repo, "model", up=False, down=True)) == {"version:model:v0"}
    assert ids(lineage(repo, "animals", up=True, down=False)) == {"version:animals:v0"}
    both = lineage(repo, "clean:v0")
    assert ids(both) == everything and edges(both) == flow
    from_run = lineage(repo, c.pre)
    assert from_run.root == f"run:{c.pre}" and ids(from_run) == everything
    assert ids(lineage(repo, c.pre, up=False, down=True, depth=1)) == {f"run:{c.pre}", "version:clean:v0"}
    assert ids(lineage(repo, c.pre, up=True, down=False)) == {f"run:{c.pre}", "version:animals:v0"}
    assert lineage(repo, "model:best").root == "version:model:v0"


def test_depth_bounds_the_walk_in_runs(local_repo, tmp_path):
    c = chain(local_repo, tmp_path)
    assert ids(lineage(local_repo, "model", up=True, down=False, depth=1)) == {
        "version:model:v0", f"run:{c.train}", "version:clean:v0"}
    assert len(lineage(local_repo, "model", up=True, down=False, depth=2).nodes) == 5
    assert ids(lineage(local_repo, "animals:v0", down=True, up=False, depth=1)) == {
        "version:animals:v0", f"run:{c.pre}", "version:clean:v0"}
    for bad in (0, -1):
        with pytest.raises(ArtfsError, match="depth"):
            lineage(local_repo, "model", depth=bad)


def test_bad_targets_are_errors(local_repo, tmp_path):
    chain(local_repo, tmp_path)
    with pytest.raises(NotFound, match="no artifact or run"):
        lineage(local_repo, "nosuch")
    with pytest.raises(NotFound, match="no artifact or run"):
        lineage(local_repo, runs.new_run_id())
    with pytest.raises(NotFound):
        lineage(local_repo, "model:v9")
    with pytest.raises(NotFound):
        lineage(local_repo, "model:nosuchalias")
    with pytest.raises(NotFound):
        lineage(local_repo, "nosuch:v0")
    with pytest.raises(InvalidName):
        lineage(local_repo, "bad name:v0")


def test_missing_runs_and_versions_are_nodes_not_errors(local_repo, tmp_path):
    ghost_run = runs.new_run_id()
    orphan = put(local_repo, tmp_path, "orphan", b"made by a run that was never recorded", run=None)
    # a version whose record names a run this store does not hold
    named = commit_tree(local_repo, str(_tree(tmp_path, "named", b"x")), "named", run=ghost_run).record
    assert named is not None
    graph = lineage(local_repo, "named")
    node = graph.nodes[f"run:{ghost_run}"]
    assert isinstance(node, RunNode) and node.state == MISSING and "does not exist" in (node.problem or "")
    assert edges(graph) == {(f"run:{ghost_run}", "version:named:v0", OUTPUT)}

    # a run that read a version whose record is gone (never published here, or purged)
    reader = runs.start_run(local_repo, name="reader", heartbeat=0).id
    gone = VersionRecord(artifact="gone", version=7, type="dataset", digest="0" * 32, manifest="0" * 32, files=1,
                         bytes=1, created=0.0, creator="x@y")
    runs.record_input(local_repo, reader, gone, "observed", 1, 1, "mount-a")
    runs.record_input(local_repo, reader, orphan, "observed", 1, 1, "mount-a")
    graph = lineage(local_repo, reader)
    missing = graph.nodes["version:gone:v7"]
    assert isinstance(missing, VersionNode) and missing.state == MISSING and missing.digest is None
    assert graph.nodes["version:orphan:v0"].state == LIVE
    # going down from the live one reaches the run, and from it nothing more
    assert ids(lineage(local_repo, "orphan", up=False)) == {"version:orphan:v0", f"run:{reader}"}


def test_derived_from_edges_where_no_run_made_it(local_repo, tmp_path):
    v0 = put(local_repo, tmp_path, "animals", b"one")
    base = _tree(tmp_path, "changed", b"two")
    v1 = commit_tree(local_repo, str(base), "animals", base=v0.version).record
    assert v1 is not None and v1.parent == 0 and v1.run is None
    graph = lineage(local_repo, "animals:v1", up=True, down=False)
    assert edges(graph) == {("version:animals:v0", "version:animals:v1", DERIVED)}
    assert graph.nodes["version:animals:v0"].aliases == ()
    assert ids(lineage(local_repo, "animals:v1", up=True, down=False, depth=1)) == {
        "version:animals:v0", "version:animals:v1"}


def test_deleted_versions_are_shown_as_deleted(local_repo, tmp_path):
    c = chain(local_repo, tmp_path)
    put(local_repo, tmp_path, "clean", b"a second cut")  # so clean:v0 is not latest and can be deleted
    lifecycle.delete(local_repo, "clean:v0")
    graph = lineage(local_repo, "model", up=True, down=False)
    clean = graph.nodes["version:clean:v0"]
    assert isinstance(clean, VersionNode) and clean.state == DELETED and clean.deleted_at is not None
    assert clean.aliases == () and clean.digest == c.clean.digest  # its record is still there
    assert len(graph.nodes) == 5  # the walk goes on through it
    assert lineage(local_repo, "clean:v0").nodes["version:clean:v0"].state == DELETED  # named as the start
    lifecycle.delete(local_repo, "model:v0", delete_aliases=True)
    with pytest.raises(ArtfsError, match="deleted"):
        lineage(local_repo, "model")  # latest: there is none
    assert lineage(local_repo, "animals:v0").nodes["version:model:v0"].state == DELETED


def test_a_cycle_in_a_damaged_store_ends(local_repo, tmp_path):
    run_id = runs.start_run(local_repo, name="loop", heartbeat=0).id
    rec = put(local_repo, tmp_path, "loop", b"itself", run=run_id)
    runs.record_input(local_repo, run_id, rec, "observed", 1, 6, "mount-a")  # it read what it made
    graph = lineage(local_repo, "loop")
    assert ids(graph) == {"version:loop:v0", f"run:{run_id}"}
    assert edges(graph) == {(f"run:{run_id}", "version:loop:v0", OUTPUT), ("version:loop:v0", f"run:{run_id}", INPUT)}


def test_cost_does_not_grow_with_the_number_of_runs(tmp_path):
    """O(1) requests per node: the same lineage costs the same LISTs and GETs with 3 or 40 unrelated runs,
    and never lists the runs."""
    uri = str(tmp_path / "store")
    setup = fresh_repo(uri, tmp_path / "cache-setup")
    try:
        chain(setup, tmp_path)
        costs = []
        for more in (3, 37):
            for _ in range(more):
                other = runs.start_run(setup, name="other", heartbeat=0).id
                runs.record_input(setup, other, setup.resolve("model"), "observed", 1, 1, "mount-b")
            store = CountingStore(open_store(uri))
            repo = Repo(store, Places.under(str(tmp_path / f"cache-{more}")))
            try:
                lineage(repo, "clean:v0", up=True, down=False)
            finally:
                repo.close()
            assert not any(p.startswith("runs/") and p.count("/") == 1 for p in store.lists), store.lists
            costs.append((len(store.lists), len(store.gets)))
        assert costs[0] == costs[1]
        users = lineage(setup, "model", up=False)  # its 40 users are read in parallel
        assert sum(isinstance(n, RunNode) and n.name == "other" for n in users.nodes.values()) == 40
        assert len(users.edges) == 40
    finally:
        setup.close()


_trees = itertools.count()


def _tree(tmp_path, name: str, content: bytes):
    d = tmp_path / f"tree-{name}-{next(_trees)}"
    d.mkdir()
    (d / "data.bin").write_bytes(content)
    return d
