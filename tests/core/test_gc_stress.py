"""Garbage collection under fire: several processes ("machines", each its own cache and index) commit and seal
to one S3 store (moto) in a loop, another deletes versions (retention window: one second), while gc runs in
a loop with its margin shortened to seconds — in a process, and at the same time as `artfs gc` processes
killed at random.
Afterwards every kept version reads back byte-exact on a machine that never saw it, and two more gc cycles
leave exactly the referenced packs: nothing unreferenced outlives two cycles.

Short by default (a few seconds of load); ARTFS_STRESS=1 runs minutes."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import subprocess
import time

from artfs.core import lifecycle, store_format
from artfs.core.commit import commit_tree
from artfs.core.export import export_version
from artfs.core.gc import References, collect
from artfs.core.gc_compact import scan_live
from artfs.core.gc_guard import set_margin
from artfs.core.manifest import FILE
from artfs.core.staging.area import StagingArea
from artfs.core.store_keys import PACKS, parse_pack_key
from artfs.errors import ArtfsError
from tests.support.cli import artfs_cmd
from tests.support.repos import fresh_repo
from tests.support.trees import snapshot, write_tree

STRESS = os.environ.get("ARTFS_STRESS") == "1"
LOAD_SECONDS = 240.0 if STRESS else 6.0
MARGIN = 2.0
POOL = 24  # distinct file contents shared by every writer: commits dedup against each other's chunks


def _blob(seed: int) -> bytes:
    rnd = random.Random(seed)
    return rnd.randbytes(rnd.randint(2_000, 60_000))


def _writer(store_uri: str, work: str, k: int, seconds: float) -> None:
    """Commit trees of shared contents to two artifacts until `deadline`; log what each version holds."""
    deadline = time.time() + seconds  # counted once started: spawning takes seconds here
    repo = fresh_repo(store_uri, os.path.join(work, f"writer{k}"))
    rnd = random.Random(k)
    with open(os.path.join(work, f"log{k}.jsonl"), "a") as log:
        i = 0
        while time.time() < deadline:
            files = {f"{j}.bin": rnd.randrange(POOL) for j in range(rnd.randint(1, 4))}
            src = os.path.join(work, f"src{k}-{i}")
            write_tree(src, {name: _blob(seed) for name, seed in files.items()})
            try:
                rec = commit_tree(repo, src, rnd.choice(["a", "b"])).record
            except ArtfsError as e:  # a pack collected under a very slow commit: the command says rerun
                print(f"writer {k}: {e}", flush=True)
                continue
            if rec is not None:
                log.write(json.dumps({"artifact": rec.artifact, "version": rec.version, "files": files}) + "\n")
                log.flush()
            i += 1
    print(f"writer {k}: {i} commits", flush=True)
    repo.close()


def _sealer(store_uri: str, work: str, seconds: float) -> None:
    """A staging area over artifact `s`: add a file, seal, again; log each version's whole tree."""
    deadline = time.time() + seconds  # counted once started: spawning takes seconds here
    repo = fresh_repo(store_uri, os.path.join(work, "sealer"))
    area = StagingArea.open(repo, "s")
    rnd = random.Random(99)
    tree: dict[str, int] = {}
    with open(os.path.join(work, "log-sealer.jsonl"), "a") as log:
        i = 0
        while time.time() < deadline:
            name, seed = f"s{i % 5}.bin", rnd.randrange(POOL)
            existing = area.lookup(1, name)
            if existing is not None:
                area.unlink(1, name)
            node = area.create(1, name)
            area.write(node.id, 0, _blob(seed))
            tree[name] = seed
            rec = area.seal(f"step {i}").record
            if rec is not None:
                log.write(json.dumps({"artifact": "s", "version": rec.version, "files": dict(tree)}) + "\n")
                log.flush()
            i += 1
    print(f"sealer: {i} seals", flush=True)
    area.close()
    repo.close()


def _deleter(store_uri: str, work: str, seconds: float) -> None:
    """Soft-delete a random older version now and then (restorable for one second only)."""
    deadline = time.time() + seconds  # counted once started: spawning takes seconds here
    repo = fresh_repo(store_uri, os.path.join(work, "deleter"))
    rnd = random.Random(7)
    while time.time() < deadline:
        time.sleep(0.3)
        name = rnd.choice(["a", "b", "s"])
        try:
            live = repo.view(name).live
            if len(live) > 1:
                lifecycle.delete(repo, f"{name}:v{rnd.choice(live[:-1])}", delete_aliases=True)
        except ArtfsError:
            pass
    repo.close()


def _collector(store_uri: str, work: str, seconds: float) -> None:
    deadline = time.time() + seconds  # counted once started: spawning takes seconds here
    repo = fresh_repo(store_uri, os.path.join(work, "gc"))
    freed = condemned = compacted = 0
    while time.time() < deadline:
        r = collect(repo, wait=30, compact=True)  # compaction too: live chunks move while writers reuse them
        freed, condemned = freed + r.deleted_packs, condemned + r.condemned_packs
        compacted += r.compacted_packs
        time.sleep(0.2)
    print(f"collector: {condemned} packs condemned, {freed} deleted, {compacted} rewritten", flush=True)
    repo.close()


def _killed_collectors(store_uri: str, work: str, seconds: float) -> None:
    """`artfs gc` processes, each killed at a random moment (or left to finish)."""
    deadline = time.time() + seconds  # counted once started: spawning takes seconds here
    rnd = random.Random(3)
    env = {**os.environ, "ARTFS_CACHE": os.path.join(work, "gc-cli")}
    while time.time() < deadline:
        proc = subprocess.Popen([*artfs_cmd("gc", "--store", store_uri, "--wait", "30s")], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=rnd.uniform(0.3, 2.0))  # starting python is most of it: kill early and late
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        time.sleep(0.5)  # leave the two CPUs to the writers too


def _packs(store) -> set[str]:
    return {p for k in store.list(PACKS) if (p := parse_pack_key(k))}


def _expected_contents(work: str) -> dict[tuple[str, int], dict[str, int]]:
    out = {}
    for leaf in os.listdir(work):
        if leaf.startswith("log") and leaf.endswith(".jsonl"):
            with open(os.path.join(work, leaf)) as f:
                for line in f:
                    e = json.loads(line)
                    out[(e["artifact"], e["version"])] = e["files"]
    return out


def test_gc_under_concurrent_writers(s3_store_uri, tmp_path):
    work = str(tmp_path)
    setup = fresh_repo(s3_store_uri, tmp_path / "setup")
    set_margin(setup.store, MARGIN, immediate=True)
    store_format.set_retention(setup.store, 1.0)
    setup.close()

    ctx = multiprocessing.get_context("spawn")
    args = (s3_store_uri, work, LOAD_SECONDS)
    # Two kinds of collector at once: one looping in a process, and `artfs gc` processes killed at random.
    procs = [ctx.Process(target=fn, args=args) for fn in (_sealer, _deleter, _collector, _killed_collectors)]
    procs += [ctx.Process(target=_writer, args=(s3_store_uri, work, k, LOAD_SECONDS)) for k in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=LOAD_SECONDS + 120)
        assert p.exitcode == 0, f"{p.name} ended with {p.exitcode}"

    repo = fresh_repo(s3_store_uri, tmp_path / "final")
    try:
        expected = _expected_contents(work)
        assert len(expected) >= 4
        # Nothing unreferenced outlives two cycles (once every pack is a margin old).
        # (A compaction first, of what the load left mostly dead: what it frees goes in the next two.)
        time.sleep(MARGIN + 0.5)
        collect(repo, wait=30, compact=True)
        for _ in range(2):
            time.sleep(MARGIN + 0.5)
            collect(repo, wait=30, compact=True)
        refs = References(repo, time.time())
        refs.release_relocated(scan_live(repo, refs.manifests))
        assert _packs(repo.store) == refs.packs
        # Every kept version reads back byte-exact, on a machine that never saw it.
        kept = lifecycle.kept_versions(repo)
        assert kept
        for rec in kept:
            files = expected.get((rec.artifact, rec.version))
            assert files is not None, f"{rec.ref} is in the store but no writer logged it"
            dest = tmp_path / f"out-{rec.artifact}-{rec.version}"
            export_version(repo, rec, str(dest))
            got = {path: t[2] for path, t in snapshot(dest).items() if t[0] == "file"}
            assert got == {name: _blob(seed) for name, seed in files.items()}, rec.ref
        _, entries = repo.entries(kept[-1])
        assert any(e.kind == FILE for e in entries)
    finally:
        repo.close()
