"""Versions and alias moves committed elsewhere appear in a running mount within --poll."""

from __future__ import annotations

import os
from pathlib import Path

from tests.support.cli import run_artfs
from tests.support.polling import eventually


def test_new_versions_aliases_and_artifacts_appear(mount_artfs, animals, tmp_path):
    store, src = animals
    m = mount_artfs(store, poll="1s")
    art = m.path / "animals"
    assert os.readlink(art / "latest") == "v0"
    assert not (art / "v1").exists()  # a negative entry the poll must invalidate
    before = (art / "latest" / "README.md").read_bytes()

    (src / "README.md").write_bytes(b"# animals, second cut\n")
    run_artfs("put", str(src), "animals", "--store", store, "-m", "second cut")
    eventually(lambda: (art / "v1").is_dir())
    eventually(lambda: os.readlink(art / "latest") == "v1")
    assert (art / "latest" / "README.md").read_bytes() == b"# animals, second cut\n"
    assert (art / "v0" / "README.md").read_bytes() == before  # old versions stay as they were
    assert sorted(os.listdir(art)) == ["latest", "staging", "v0", "v1"]
    assert os.getxattr(art / "latest", "user.artfs.message") == b"second cut"

    run_artfs("alias", "animals:v0", "best", "--store", store)
    eventually(lambda: (art / "best").is_symlink())
    assert os.readlink(art / "best") == "v0"
    assert (art / "best" / "README.md").read_bytes() == before
    run_artfs("alias", "animals:v1", "best", "--store", store)  # an alias moves
    eventually(lambda: os.readlink(art / "best") == "v1")
    run_artfs("alias", "animals", "best", "--delete", "--store", store)
    eventually(lambda: not os.path.lexists(art / "best"))

    other = tmp_path / "other"
    other.mkdir()
    (other / "weights.bin").write_bytes(b"\x01" * 1000)
    assert not (m.path / "model").exists()
    run_artfs("put", str(other), "model", "--type", "model", "--store", store)
    eventually(lambda: (m.path / "model" / "v0" / "weights.bin").exists())
    assert sorted(os.listdir(m.path)) == ["animals", "model"]
    assert Path(m.path / "model" / "latest" / "weights.bin").read_bytes() == b"\x01" * 1000
    assert "animals: new v1" in m.log_text() and "animals: latest -> v1" in m.log_text()
