"""Reads through a mount with a cold cache while the S3 wire misbehaves (tests/support/fault_proxy.py):
every read returns the exact bytes or fails with EIO — never wrong bytes, never a hang, never a dead
daemon — and at a 10% fault rate retries make every read succeed."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random

import pytest

from tests.support.cli import run_artfs
from tests.support.fault_proxy import FaultProxy, mount_through
from tests.support.repos import commit
from tests.support.s3server import s3_env
from tests.support.trees import snapshot, write_tree

MiB = 1 << 20
STRESS = bool(os.environ.get("ARTFS_STRESS"))


@pytest.mark.parametrize("rate", [0.1, 0.3])
def test_cold_reads_under_wire_faults(mount_artfs, s3_server, s3_store_uri, tmp_path, rate: float) -> None:
    rng = random.Random(int(rate * 100))
    src = tmp_path / "src"
    files = {"big.bin": rng.randbytes((64 if STRESS else 16) * MiB),
             **{f"small/{i:03d}.bin": rng.randbytes(rng.randint(1, 32 * 1024)) for i in range(100)}}
    write_tree(src, files)
    commit(s3_store_uri, src, "animals", tmp_path / "writer")
    digests = {p: hashlib.sha256(b).hexdigest() for p, b in files.items()}
    with FaultProxy(s3_server.endpoint, rate=rate, seed=7, stall=0.5,
                    faults=("reset", "slowdown", "truncate", "truncate_declared", "stall")) as proxy:
        m = mount_through(proxy, mount_artfs, s3_store_uri, "animals")
        root = m.path / "animals" / "v0"
        ok = failed = 0
        for path, digest in digests.items():
            try:
                got = hashlib.sha256((root / path).read_bytes()).hexdigest()
            except OSError as e:
                assert e.errno == errno.EIO, e
                failed += 1
                continue
            assert got == digest, f"{path}: wrong bytes"
            ok += 1
        assert os.path.ismount(m.path) and m.stats()["reads"] > 0  # the daemon is alive and serving
        injected = sum(proxy.counts.values())
    assert injected > 0
    if rate <= 0.1:
        assert failed == 0, f"{failed} reads failed at a 10% fault rate ({proxy.counts})"
    assert ok + failed == len(digests)


@pytest.mark.parametrize("rate", [0.1, 0.3])
def test_seal_under_wire_faults(mount_artfs, s3_server, s3_store_uri, tmp_path, rate: float) -> None:
    """Each seal publishes exactly the staged tree, or fails with one line, publishes nothing and keeps
    every staged change."""
    rng = random.Random(int(rate * 1000))
    src = tmp_path / "src"
    write_tree(src, {"a.txt": b"a"})
    commit(s3_store_uri, src, "animals", tmp_path / "writer")
    rounds = 10 if STRESS else 3
    sealed = 0
    with FaultProxy(s3_server.endpoint, rate=rate, seed=17, stall=0.5,
                    faults=("reset", "slowdown", "error_after_apply", "truncate", "stall")) as proxy:
        m = mount_artfs(s3_store_uri, env={**s3_env(proxy.endpoint), "ARTFS_STORE_DEADLINE": "10"})
        m.expected_errors = [r"store .* unreachable", r"seal of animals failed"]
        st = m.path / "animals" / "staging"
        for round_ in range(rounds):
            (st / f"r{round_}.bin").write_bytes(rng.randbytes(rng.randint(1, 6) * MiB))
            expected = snapshot(st)
            before = sorted(os.listdir(m.path / "animals"))
            res = run_artfs("seal", str(st), "--json", check=False, timeout=300)
            if res.returncode != 0:
                assert res.returncode == 1 and res.stderr.strip().count("\n") == 0, res.stderr
                assert snapshot(st) == expected, "a failed seal lost staged changes"
                now = run_artfs("ls", "animals", "--store", s3_store_uri, "--json", env=s3_env(s3_server.endpoint))
                versions = [v["version"] for v in json.loads(now.stdout)]
                if len(versions) > len([n for n in before if n.startswith("v")]):  # its claim landed, the
                    dest = tmp_path / f"lost-answer{round_}"                        # answer was lost: whole
                    run_artfs("get", f"animals:v{versions[-1]}", str(dest), "--store", s3_store_uri,
                              env=s3_env(s3_server.endpoint))
                    assert snapshot(dest) == expected
                continue
            sealed += 1
            version = json.loads(res.stdout)["version"]
            dest = tmp_path / f"v{version}"
            run_artfs("get", f"animals:v{version}", str(dest), "--store", s3_store_uri,
                      env=s3_env(s3_server.endpoint))  # straight to the server: what was really stored
            assert snapshot(dest) == expected
        assert sum(proxy.counts.values()) > 0
    if rate <= 0.1:
        assert sealed >= rounds - rounds // 10, (sealed, proxy.counts)
