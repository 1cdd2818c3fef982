"""A version deleted in the store (core/lifecycle.py) leaves a running mount within --poll and `latest`
moves back; a file of it that a process holds open stays readable until closed (the mount does not yank
data from under a training job); a staging area whose base was deleted keeps working and seals (with
`--ttl`, sent through the daemon)."""

from __future__ import annotations

import os
import random

from artfs.core import lifecycle
from tests.support.cli import seal
from tests.support.polling import eventually
from tests.support.repos import commit, fresh_repo


def test_deleted_version_hidden_open_file_kept_staging_works(mount_artfs, small_store, tmp_path):
    store, src = small_store
    new_dog = random.Random(7).randbytes(3 << 20)
    (src / "images" / "dog.png").write_bytes(new_dog)
    commit(store, src, "animals", tmp_path / "writer-cache", message="second cut")  # v1
    m = mount_artfs(store, poll="1s")
    art = m.path / "animals"
    assert os.readlink(art / "latest") == "v1"
    staging = art / "staging"
    (staging / "notes.txt").write_bytes(b"staged on top of v1\n")  # a dirty area, based on v1

    f = open(art / "v1" / "images" / "dog.png", "rb")  # noqa: SIM115 - held open across the delete
    try:
        head = f.read(1 << 20)
        repo = fresh_repo(store, tmp_path / "deleter-cache")
        try:
            lifecycle.delete(repo, "animals:v1")
        finally:
            repo.close()
        eventually(lambda: os.readlink(art / "latest") == "v0", what="latest to move back to v0")
        assert sorted(os.listdir(art)) == ["latest", "staging", "v0"]
        assert not (art / "v1").exists()
        assert head + f.read() == new_dog  # the open file reads on, to its end
    finally:
        f.close()
    assert "animals: deleted v1" in m.log_text()

    # the staging area's base (v1) stays readable, and its seal merges onto the new latest (v0)
    assert (staging / "images" / "dog.png").read_bytes() == new_dog
    assert (staging / "notes.txt").read_bytes() == b"staged on top of v1\n"
    result = seal(staging, "-m", "after the delete", "--ttl", "30d")  # the TTL goes through the daemon
    assert result["ref"] == "animals:v2"  # v1's number is never reused
    repo = fresh_repo(store, tmp_path / "checker-cache")
    try:
        created = repo.version("animals", 2).created
        assert lifecycle.version_states(repo, "animals")[2].expires_at == created + 30 * 86400
    finally:
        repo.close()
    eventually(lambda: os.readlink(art / "latest") == "v2")
    assert (art / "v2" / "notes.txt").read_bytes() == b"staged on top of v1\n"
    # v1's change to dog.png was deleted with it: the merge onto v0 keeps v0's
    assert (art / "v2" / "images" / "dog.png").read_bytes() == (art / "v0" / "images" / "dog.png").read_bytes()
