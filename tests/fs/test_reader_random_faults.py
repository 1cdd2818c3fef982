"""Random reads (a file fetched whole in background parts, each landed part pushed into the page cache) while
the S3 wire misbehaves (tests/support/fault_proxy.py): every pread gives the exact bytes or EIO, never wrong
bytes or a hang; and once the wire heals, the whole file reads right through the same mount: whatever was
pushed into the page cache (read back from there, not from the daemon) was right, and nothing a failed part
touched was left behind."""

from __future__ import annotations

import errno
import os
import random
import time

import pytest

from tests.support.fault_proxy import FaultProxy, mount_through
from tests.support.repos import commit

MiB = 1 << 20
PAGE = 4096


@pytest.mark.parametrize("rate", [0.3, 0.8])
def test_random_reads_of_whole_fetched_files_under_wire_faults(mount_artfs, s3_server, s3_store_uri, tmp_path,
                                                                rate: float) -> None:
    rng = random.Random(int(rate * 100))
    files = {f"f{i}.bin": rng.randbytes(24 * MiB + 1000 * i) for i in range(3)}  # random: raw chunks, 2 parts each
    src = tmp_path / "src"
    src.mkdir()
    for name, data in files.items():
        (src / name).write_bytes(data)
    commit(s3_store_uri, src, "ds", tmp_path / "writer-cache")
    reads = [(name, rng.randrange(0, len(files[name]) - PAGE) // PAGE * PAGE)
             for name in rng.choices(sorted(files), k=450)]
    with FaultProxy(s3_server.endpoint, rate=rate, seed=3, stall=0.5,
                    faults=("reset", "slowdown", "truncate", "truncate_declared", "stall")) as proxy:
        m = mount_through(proxy, mount_artfs, s3_store_uri, "ds")
        root = m.path / "ds" / "v0"
        fds = {name: os.open(root / name, os.O_RDONLY) for name in files}
        ok = failed = 0
        t0 = time.monotonic()
        try:
            for name, off in reads:
                try:
                    got = os.pread(fds[name], PAGE, off)
                except OSError as e:
                    assert e.errno == errno.EIO, e
                    failed += 1
                    continue
                assert got == files[name][off : off + PAGE], f"wrong bytes in {name} at {off}"
                ok += 1
        finally:
            for fd in fds.values():
                os.close(fd)
        assert time.monotonic() - t0 < 300, "random reads hung"
        assert m.stats().get("whole_files", 0) >= 1  # the whole-file path was taken, faults and all
        assert os.path.ismount(m.path)
        injected = sum(proxy.counts.values())
        proxy.rate = 0.0  # the wire heals: each file reads right, pushed pages included
        for name, data in files.items():
            assert (root / name).read_bytes() == data, name
    assert injected > 0 and ok > 0
    assert ok + failed == len(reads)
