"""A commit lists its artifact's records once, and stays safe with that one (possibly stale) listing:
numbers are still distinct under racing writers, deleted numbers stay taken, "unchanged" is not decided
on a stale latest, and a wrong type is still refused."""

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator

import msgspec
import pytest

from artfs.core import lifecycle
from artfs.core.commit import Committer, commit_tree
from artfs.core.places import Places
from artfs.core.records import encode
from artfs.core.repo import Repo
from artfs.core.store_keys import artifact_prefix, version_key, versions_prefix
from artfs.errors import ArtfsError
from artfs.storage.open import open_store
from artfs.storage.store import WrappingStore
from tests.support.repos import fresh_repo
from tests.support.trees import write_tree


class CountingStore(WrappingStore):
    """A real store, every LIST recorded (its prefix) and every other call counted."""

    def __init__(self, inner) -> None:  # noqa: ANN001
        super().__init__(inner)
        self.lists: list[str] = []
        self.probes = 0

    def list(self, prefix: str) -> Iterator[str]:
        self.lists.append(prefix)
        return super().list(prefix)

    def exists(self, key: str) -> bool:
        self.probes += 1
        return super().exists(key)

    def version_lists(self, name: str) -> int:
        """LISTs that read every version record of `name` (those of its alias or lifecycle logs do not)."""
        return sum(p in (artifact_prefix(name), versions_prefix(name)) for p in self.lists)


def _repo(store_uri: str, cache, counting: bool = False) -> Repo:  # noqa: ANN001
    store = open_store(store_uri)
    return Repo(CountingStore(store) if counting else store, Places.under(str(cache)))


def _src(tmp_path, files: dict[str, bytes]) -> str:  # noqa: ANN001
    src = tmp_path / f"src-{len(os.listdir(tmp_path))}"
    write_tree(src, files)
    return str(src)

@contextlib.contextmanager
def _two_machines(store_uri: str, tmp_path) -> Iterator[tuple[Repo, Repo]]:  # noqa: ANN001
    """Two machines (repos with caches of their own) on one store, closed after the test."""
    a, b = fresh_repo(store_uri, tmp_path / "a"), fresh_repo(store_uri, tmp_path / "b")
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def _versions(repo: Repo, tmp_path, name: str, n: int) -> None:  # noqa: ANN001
    """`name` with n versions: one committed, n-1 more records of the same tree (fast, and listed alike)."""
    rec = commit_tree(repo, _src(tmp_path, {"f": b"first"}), name).record
    assert rec is not None
    for i in range(1, n):
        assert repo.store.create_if_absent(version_key(name, i), encode(msgspec.structs.replace(rec, version=i)))


def test_a_put_lists_the_artifact_once(local_store_uri, tmp_path):
    setup = fresh_repo(local_store_uri, tmp_path / "setup")
    _versions(setup, tmp_path, "many", 120)
    setup.close()
    for cache in ("cold", "cold", "other"):  # a machine that never saw it, then the same one again
        repo = _repo(local_store_uri, tmp_path / cache, counting=True)
        try:
            store = repo.store
            assert isinstance(store, CountingStore)
            res = commit_tree(repo, _src(tmp_path, {"f": os.urandom(64), "g": b"more"}), "many", message="m")
            assert store.version_lists("many") == 1, store.lists
            assert res.record is not None and res.record.version == repo.version_numbers("many")[-1]
        finally:
            repo.close()
    # with aliases and a type given: still one listing of the versions (the alias log is its own prefix)
    repo = _repo(local_store_uri, tmp_path / "cold", counting=True)
    try:
        res = commit_tree(repo, _src(tmp_path, {"f": b"aliased"}), "many", type_="dataset", aliases=("best",))
        assert repo.store.version_lists("many") == 1, repo.store.lists  # type: ignore[attr-defined]
        assert res.record is not None and repo.aliases("many") == {"best": res.record.version}
    finally:
        repo.close()


def test_an_unchanged_put_lists_once_and_probes(local_store_uri, tmp_path):
    repo = _repo(local_store_uri, tmp_path / "c", counting=True)
    try:
        src = _src(tmp_path, {"f": b"same"})
        assert commit_tree(repo, src, "u").record is not None
        repo.store.lists.clear()  # type: ignore[attr-defined]
        res = commit_tree(repo, src, "u", aliases=("prod",))
        assert res.record is None
        assert repo.store.version_lists("u") == 1  # type: ignore[attr-defined]
        assert repo.aliases("u") == {"prod": 0}
    finally:
        repo.close()


def _started(repo: Repo, tmp_path, name: str, files: dict[str, bytes], type_: str | None = None) -> Committer:  # noqa: ANN001
    """A commit that has listed its artifact and read its tree, not yet published."""
    src = _src(tmp_path, files)
    c = Committer(repo, name)
    c.check_type(type_)
    for path, content in sorted(files.items()):
        c.add_file(path, os.path.join(src, path), 0o644, 0, len(content))
    return c


def test_a_commit_beaten_to_its_number_gets_the_next(store_uri, tmp_path):
    with _two_machines(store_uri, tmp_path) as (a, b):
        commit_tree(a, _src(tmp_path, {"f": b"0"}), "race")
        slow = _started(a, tmp_path, "race", {"f": b"slow"})  # its listing says: next is v1
        assert commit_tree(b, _src(tmp_path, {"f": b"fast"}), "race").record.version == 1  # type: ignore[union-attr]
        lifecycle.delete(b, "race:v1")  # deleted, and its number stays taken
        res = slow.publish()
        assert res.record is not None and res.record.version == 2
        assert a.version_numbers("race") == [0, 1, 2]
        assert a.resolve("race").version == 2


def test_deleted_numbers_stay_taken_with_a_stale_listing(store_uri, tmp_path):
    with _two_machines(store_uri, tmp_path) as (a, b):
        for i in range(3):
            commit_tree(a, _src(tmp_path, {"f": str(i).encode()}), "d")
        slow = _started(a, tmp_path, "d", {"f": b"new"})
        lifecycle.delete(b, "d:v2")
        res = slow.publish()
        assert res.record is not None and res.record.version == 3  # not v2 again


def test_unchanged_is_not_decided_on_a_stale_latest(store_uri, tmp_path):
    """A tree equal to latest as the commit first saw it: published all the same if latest moved since."""
    with _two_machines(store_uri, tmp_path) as (a, b):
        commit_tree(a, _src(tmp_path, {"f": b"v0"}), "s")
        commit_tree(a, _src(tmp_path, {"f": b"same"}), "s")
        slow = _started(a, tmp_path, "s", {"f": b"same"})  # equals v1, latest when it listed
        commit_tree(b, _src(tmp_path, {"f": b"other"}), "s")  # v2 meanwhile
        res = slow.publish()
        assert res.record is not None and res.record.version == 3  # the user's tree is latest again

        slow = _started(a, tmp_path, "s", {"f": b"same"})  # equals v3, latest when it listed
        lifecycle.delete(b, "s:v3")  # latest is v2 again, which differs
        res = slow.publish()
        assert res.record is not None and res.record.version == 4

        slow = _started(a, tmp_path, "s", {"f": b"same"})  # nothing happened meanwhile: unchanged
        assert slow.publish().record is None


def test_a_wrong_type_is_refused_even_when_published_meanwhile(local_store_uri, tmp_path):
    with _two_machines(local_store_uri, tmp_path) as (a, b):
        commit_tree(b, _src(tmp_path, {"f": b"m"}), "t", type_="model")
        with pytest.raises(ArtfsError, match="is a model, not a dataset"):
            commit_tree(a, _src(tmp_path, {"f": b"x"}), "t", type_="dataset")
        assert a.version_numbers("t") == [0]
        slow = _started(a, tmp_path, "new", {"f": b"a"}, type_="dataset")  # a new artifact, as a dataset
        commit_tree(b, _src(tmp_path, {"f": b"b"}), "new", type_="model")  # v0, a model, meanwhile
        with pytest.raises(ArtfsError, match="is a model, not a dataset"):
            slow.publish(type_="dataset")
        assert a.version_numbers("new") == [0]


_WRITER = """
import sys
from artfs.core.commit import commit_tree
from artfs.core.places import Places
from artfs.core.repo import Repo
from artfs.storage.open import open_store
uri, src, cache, n = sys.argv[1:5]
repo = Repo(open_store(uri), Places.under(cache))
for i in range(int(n)):
    with open(src + "/f", "w") as f:
        f.write(f"{src} {i}")
    print(commit_tree(repo, src, "shared").record.version, flush=True)
"""


def test_two_machines_putting_at_once_get_distinct_versions(local_store_uri, tmp_path):
    setup = fresh_repo(local_store_uri, tmp_path / "setup")
    _versions(setup, tmp_path, "shared", 50)
    setup.close()
    procs = []
    for i in range(2):
        src = tmp_path / f"w{i}"
        src.mkdir()
        procs.append(subprocess.Popen(
            [sys.executable, "-c", _WRITER, local_store_uri, str(src), str(tmp_path / f"cache{i}"), "15"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    got = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        got += [int(line) for line in out.split()]
    assert sorted(got) == list(range(50, 80))  # 30 puts, 30 distinct numbers, none lost
    reader = fresh_repo(local_store_uri, tmp_path / "reader")
    try:
        assert reader.version_numbers("shared") == list(range(80))
    finally:
        reader.close()


def test_a_seal_lists_the_artifact_once_and_still_merges(local_store_uri, tmp_path):
    """A seal asks the same questions as a put (type, latest, the next number): one listing. When someone
    published after that listing, the claim is lost and the seal merges onto the new latest (listing again)."""
    from artfs.core.staging import StagingArea
    from artfs.core.staging.layout import ROOT_ID

    setup = fresh_repo(local_store_uri, tmp_path / "setup")
    _versions(setup, tmp_path, "many", 30)
    repo = _repo(local_store_uri, tmp_path / "sealer", counting=True)
    try:
        store = repo.store
        assert isinstance(store, CountingStore)
        area = StagingArea.open(repo, "many")
        try:
            area.write(area.create(ROOT_ID, "a.txt").id, 0, b"staged a")
            store.lists.clear()
            assert area.seal("one").record.version == 30
            assert store.version_lists("many") == 1, store.lists

            area.write(area.create(ROOT_ID, "b.txt").id, 0, b"staged b")
            # another machine publishes between this seal's listing and its claim
            real_view = repo.view
            beaten = []

            def view_then_publish(name, now=None):  # noqa: ANN001, ANN202
                view = real_view(name, now)
                if not beaten:
                    theirs = {"f": b"first", "a.txt": b"staged a", "c.txt": b"theirs"}
                    beaten.append(commit_tree(setup, _src(tmp_path, theirs), "many"))
                return view

            repo.view = view_then_publish  # type: ignore[method-assign]
            store.lists.clear()
            res = area.seal("two")
            assert beaten[0].record.version == 31 and res.record.version == 32
            assert store.version_lists("many") == 2, store.lists  # the first listing, and one after the lost claim
            names = {e.path for e in repo.entries(repo.version("many", 32))[1]}
            assert {"a.txt", "b.txt", "c.txt", "f"} <= names  # merged onto theirs: nothing dropped
        finally:
            area.close()
    finally:
        repo.close()
        setup.close()
