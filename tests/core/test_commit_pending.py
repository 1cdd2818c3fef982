"""A commit's memory of its new chunks is bounded by the packs in flight, not by the files it holds; content
seen again after its pack was uploaded is still reused, and every pack the manifest names is stored."""

import os

from artfs.core import packs
from artfs.core.commit import UPLOADS_IN_FLIGHT, Committer, commit_tree
from artfs.core.content import ChunkReader
from artfs.core.store_keys import pack_key
from tests.support.repos import fresh_repo
from tests.support.trees import write_tree


def test_pending_chunks_are_let_go_once_their_pack_is_stored(local_store_uri, tmp_path, monkeypatch):
    monkeypatch.setattr(packs, "PACK_TARGET", 4096)  # ~20 chunks of 200 bytes a pack
    files = {f"d/f{i:04d}": os.urandom(200) for i in range(400)}
    files.update({f"e/copy{i:02d}": files[f"d/f{i:04d}"] for i in range(0, 40, 4)})  # after their packs left
    src = tmp_path / "src"
    write_tree(src, files)
    most = 0
    flush = Committer._flush_pack

    def watched(self: Committer) -> None:
        nonlocal most
        most = max(most, len(self._pending))
        flush(self)

    monkeypatch.setattr(Committer, "_flush_pack", watched)
    repo = fresh_repo(local_store_uri, tmp_path / "cache")
    try:
        res = commit_tree(repo, str(src), "small")
        assert res.record is not None
        assert res.new_chunks == 400 and res.reused_chunks == 10  # the copies: found in the index, not re-packed
        per_pack = 4096 // 200 + 1
        assert most <= (UPLOADS_IN_FLIGHT + 2) * per_pack < 400
        header, entries = repo.entries(res.record)
        assert all(repo.store.exists(pack_key(p)) for p in header.packs)
        by_path = {e.path: e for e in entries}
        reader = ChunkReader(repo.store)
        for i in range(0, 40, 4):
            copy, orig = by_path[f"e/copy{i:02d}"], by_path[f"d/f{i:04d}"]
            assert copy.refs(header.packs) == orig.refs(header.packs)
            assert reader.read_chunk(copy.refs(header.packs)[0]) == files[f"d/f{i:04d}"]
    finally:
        repo.close()
