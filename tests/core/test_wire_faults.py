"""`put` and `get` against an S3 that misbehaves on the wire (tests/support/fault_proxy.py between artfs
and the moto server): each run ends with exactly the bytes written, or with one clean line and nothing
published — never wrong bytes, never a hang. At a 10% fault rate retries make nearly every run succeed.

The short form (CI) runs a few rounds of each; ARTFS_STRESS=1 runs 20 (the issue's acceptance numbers).
"""

from __future__ import annotations

import json
import os
import random

import pytest

from tests.support.cli import run_artfs
from tests.support.fault_proxy import FaultProxy, ranged_gets
from tests.support.s3server import s3_env
from tests.support.trees import snapshot, write_tree

MiB = 1 << 20
STRESS = bool(os.environ.get("ARTFS_STRESS"))
ROUNDS = 20 if STRESS else 3


def _dataset(root, seed: int = 3) -> None:
    rng = random.Random(seed)
    files = {f"small/{i:04d}.bin": rng.randbytes(rng.randint(1, 16 * 1024)) for i in range(1000 if STRESS else 150)}
    files["big.bin"] = rng.randbytes((100 if STRESS else 24) * MiB)
    write_tree(root, files)


def _through(proxy: FaultProxy) -> dict[str, str]:
    return {**s3_env(proxy.endpoint), "ARTFS_STORE_DEADLINE": "20"}


def _versions(store: str, name: str) -> list[int]:
    res = run_artfs("ls", name, "--store", store, "--json", check=False)
    return [v["version"] for v in json.loads(res.stdout)] if res.returncode == 0 else []


def test_a_body_cut_short_with_a_matching_length_is_retried(s3_server, s3_store_uri, tmp_path) -> None:
    src = tmp_path / "src"
    write_tree(src, {"big.bin": os.urandom(6 * MiB), "a.txt": b"a"})
    run_artfs("put", str(src), "animals", "--store", s3_store_uri)
    with FaultProxy(s3_server.endpoint, faults=("truncate",), applies=ranged_gets, first=2) as proxy:
        res = run_artfs("get", "animals:v0", str(tmp_path / "out"), "--store", s3_store_uri, env=_through(proxy))
    assert res.returncode == 0 and proxy.counts["truncate"] == 2
    assert snapshot(tmp_path / "out") == snapshot(src)


@pytest.mark.parametrize("rate", [0.1, 0.3])
def test_put_and_get_under_wire_faults(s3_server, s3_store_uri, tmp_path, rate: float) -> None:
    src = tmp_path / "src"
    _dataset(src)
    expected = snapshot(src)
    puts = gets = injected = 0
    for round_ in range(ROUNDS):
        (src / "round.txt").write_text(str(round_))  # each put a new version
        expected["round.txt"] = snapshot(src)["round.txt"]
        before = _versions(s3_store_uri, "animals")
        with FaultProxy(s3_server.endpoint, rate=rate, seed=round_, stall=0.5) as proxy:
            res = run_artfs("put", str(src), "animals", "--store", s3_store_uri, "--json", env=_through(proxy),
                            check=False, timeout=300)
        injected += sum(proxy.counts.values())
        after = _versions(s3_store_uri, "animals")
        if res.returncode != 0:
            assert res.returncode == 1 and res.stderr.strip().count("\n") == 0, res.stderr
            if after != before:  # the claim landed but its answer was lost for good: the version is whole
                assert after == [*before, after[-1]]
                dest = tmp_path / f"lost-answer{round_}"
                run_artfs("get", f"animals:v{after[-1]}", str(dest), "--store", s3_store_uri)
                assert snapshot(dest) == expected
            continue
        puts += 1
        version = json.loads(res.stdout)["version"]
        assert after == [*before, version]
        dest = tmp_path / f"out{round_}"
        with FaultProxy(s3_server.endpoint, rate=rate, seed=100 + round_, stall=0.5) as proxy:
            res = run_artfs("get", f"animals:v{version}", str(dest), "--store", s3_store_uri,
                            env=_through(proxy), check=False, timeout=300)
        injected += sum(proxy.counts.values())
        if res.returncode != 0:
            assert res.returncode == 1 and res.stderr.strip().count("\n") == 0, res.stderr
            assert not dest.exists(), "a failed get left a half-written copy"
            continue
        gets += 1
        assert snapshot(dest) == expected, f"round {round_}: wrong bytes"
    assert injected >= ROUNDS, "the proxy injected (almost) no faults: the test tests nothing"
    if rate <= 0.1:  # retries work, not just clean failures: at least 19 of 20
        assert puts >= ROUNDS - ROUNDS // 20 and gets >= puts - ROUNDS // 20, (puts, gets)
