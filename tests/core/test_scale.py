"""Manifests scale: a version of many files commits, indexes, lists and looks up in bounded memory."""

import time
import tracemalloc

from artfs.core.commit import Committer
from artfs.core.manifest import FILE, Entry
from artfs.core.packs import REF
from artfs.core.places import Places
from artfs.core.repo import Repo
from artfs.core.store_keys import pack_key
from artfs.storage.open import open_store

N = 200_000


def test_many_files_bounded_memory(tmp_path):
    repo = Repo(open_store(str(tmp_path / "store")), Places.under(str(tmp_path / "cache")))
    try:
        packs = ["ab" * 16]
        repo.store.put(pack_key(packs[0]), b"x")  # the one location every entry names exists (gc's pre-claim check)
        tracemalloc.start()
        t0 = time.time()
        c = Committer(repo, "huge")
        per_dir = 1000
        for d in range(N // per_dir):
            c.add_dir(f"d{d:04d}", 0o755, 0)
            for i in range(per_dir):
                # Synthetic entries reusing one stored chunk location: no file I/O, just the manifest path.
                data = REF.pack(bytes(16), 0, 0, 1, 1, 0)
                c.add_existing(Entry(f"d{d:04d}/f{i:05d}", FILE, 0o644, 0, 1, data, b""), packs)
        result = c.publish()
        _, commit_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        header = repo.ensure_index(result.record)
        _, index_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert header.files == N
        assert commit_peak < 64 * 1024 * 1024, commit_peak
        assert index_peak < 64 * 1024 * 1024, index_peak
        mid = result.record.manifest
        assert repo.index.lookup(mid, "d0123/f00042").size == 1
        assert [e.name for e in repo.index.listdir(mid, "d0199", limit=2)] == ["f00000", "f00001"]
        assert len(repo.index.listdir(mid, "")) == N // per_dir
        _, entries = repo.entries(result.record)
        assert sum(1 for _ in entries) == N + N // per_dir
        print(f"{N} files: commit+index {time.time() - t0:.1f}s")
    finally:
        repo.close()
