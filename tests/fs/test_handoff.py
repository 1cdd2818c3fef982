"""fs/handoff.py: blocking calls from the trio loop in worker threads: results and exceptions come back,
a slow call never holds up quick ones while threads are left, and calls beyond the limit queue and finish."""

from __future__ import annotations

import threading

import pytest
import trio

from artfs.fs.handoff import Handoff


def test_results_and_exceptions_come_back_to_the_caller() -> None:
    async def main() -> None:
        h = Handoff()
        assert await h.run(lambda a, b: a + b, 2, 3) == 5
        assert await h.run(threading.get_ident) != threading.get_ident()  # another thread did it
        with pytest.raises(OSError) as info:
            await h.run(lambda: (_ for _ in ()).throw(OSError(28, "full")))
        assert info.value.errno == 28

    trio.run(main)


def test_a_slow_call_does_not_hold_up_quick_ones() -> None:
    release = threading.Event()
    done: list[str] = []

    async def main() -> None:
        h = Handoff(max_threads=4)

        async def slow() -> None:
            await h.run(release.wait, 30)
            done.append("slow")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow)
            await trio.sleep(0.05)
            for i in range(20):
                assert await h.run(lambda i=i: i * 2) == i * 2
            done.append("quick")
            release.set()

    trio.run(main)
    assert done == ["quick", "slow"]


def test_calls_beyond_the_thread_limit_queue_and_all_finish() -> None:
    gate = threading.Event()
    running = []
    lock = threading.Lock()

    def work(i: int) -> int:
        with lock:
            running.append(i)
        gate.wait(30)
        return i

    async def main() -> list[int]:
        h = Handoff(max_threads=2)
        results: list[int] = []

        async def one(i: int) -> None:
            results.append(await h.run(work, i))

        async with trio.open_nursery() as nursery:
            for i in range(7):
                nursery.start_soon(one, i)
            while len(running) < 2:
                await trio.sleep(0.01)
            await trio.sleep(0.1)
            assert len(running) == 2  # two threads at most: the rest wait in the queue
            gate.set()
        for i in range(3):  # and the pool is still usable, with no more threads than allowed
            assert await h.run(lambda i=i: i) == i
        assert h._threads == 2
        return results

    assert sorted(trio.run(main)) == list(range(7))
