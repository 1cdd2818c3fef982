"""The goals of issue 13 in one table, from the figures the other tables measured in this same run.

Nothing is measured here: each row reads its artfs figure and its yardstick (a peer, local disk, the null
pyfuse3 filesystem of table_floor, or a fixed target) out of the run's report, and says whether the goal
is met. A row whose figures were not measured in this run (a table skipped with --only, a peer missing)
prints n/a, never a number from elsewhere.

Where a row has a bound — the most that a minimal system of artfs's kind, or the server, did in this run
(a null pyfuse3 fs streaming S3 and keeping a copy, the preads answered as the file lands at the server's
ceiling, the null fs's page-cache re-read...) — a goal not met is told apart: if the goal asks for more
than the bound reached, no code in artfs could meet it here ("beyond the bound", with artfs's share of
the bound); otherwise it is artfs's own ("**not met**").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.common import fmt_num, md_table

Lookup = Callable[[dict], "float | None"]


def _get(report: dict, *path: str) -> Any:
    node: Any = report.get("tables", {})
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def median(*path: str) -> Lookup:
    """The median of a Sample stored at `path` in report["tables"]."""
    def look(report: dict) -> float | None:
        sample = _get(report, *path)
        return _number(sample.get("median") if isinstance(sample, dict) else sample)
    return look


def floor_seconds(system: str, op: str) -> Lookup:
    """table_floor's median seconds for `op` on `system`."""
    return lambda report: _number(_get(report, "floor", "figures", f"{op}/{system}", "median_s"))


def _per_second(amount: Lookup, seconds: Lookup) -> Lookup:
    def look(report: dict) -> float | None:
        a, t = amount(report), seconds(report)
        return a / t if a and t else None
    return look


def floor_rate(system: str, op: str = "cp") -> Lookup:
    """table_floor's figure as a rate (files/s): its median seconds for the small-file set."""
    return _per_second(lambda report: _number(_get(report, "floor", "small_files")), floor_seconds(system, op))


def best(*lookups: Lookup, lowest: bool = False) -> Lookup:
    """The best of several peers' figures: the highest, or with `lowest` (times) the lowest."""
    def look(report: dict) -> float | None:
        values = [v for v in (f(report) for f in lookups) if v is not None]
        return (min(values) if lowest else max(values)) if values else None
    return look


def fixed(value: float) -> Lookup:
    return lambda report: value


def floor_mbps(system: str, op: str) -> Lookup:
    """table_floor's figure for the 512 MiB file (`dd`, `reread`) as MB/s."""
    def megabytes(report: dict) -> float | None:
        mib = _number(_get(report, "floor", "big_mib"))
        return None if mib is None else mib * (1 << 20) / 1e6
    return _per_second(megabytes, floor_seconds(system, op))


def _number(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) else None


@dataclass
class Goal:
    figure: str
    unit: str
    artfs: Lookup
    yardstick: Lookup
    against: str  # what the yardstick is
    target: float  # artfs ÷ yardstick must reach this (higher is better) ...
    lower_is_better: bool = False  # ... or, for times and sizes, artfs must stay at or under yardstick × target
    bound: Lookup | None = None  # the most a minimal system of artfs's kind (or the server) did here
    bound_what: str = ""

    def _yardstick(self, y: float | None) -> str:
        return "a fixed target" if self.against[:1].isdigit() else f"{self.against}: {_cell(y, self.unit)}"

    def row(self, report: dict) -> list[str]:
        a, y = self.artfs(report), self.yardstick(report)
        if a is None or y is None or y == 0:
            return [self.figure, _cell(a, self.unit), self._yardstick(y), self._goal(), "n/a",
                    "not measured in this run"]
        need = y * self.target
        if self.lower_is_better:
            ratio, met = a / y, a <= need
        else:
            ratio, met = a / y, a >= need
        return [self.figure, _cell(a, self.unit), self._yardstick(y), self._goal(), f"{ratio:.2f}×",
                "met" if met else self._unmet(report, a, need)]

    def _unmet(self, report: dict, a: float, need: float) -> str:
        """Why a goal is not met: beyond what the bound reached here, or artfs's own."""
        b = self.bound(report) if self.bound is not None else None
        if b is None or b <= 0:
            return "**not met**"
        beyond = need < b if self.lower_is_better else need > b
        if not beyond:
            return f"**not met** ({self.bound_what} reached {_cell(b, self.unit)})"
        share = b / a if self.lower_is_better else a / b
        return (f"beyond the bound: {self.bound_what} reached {_cell(b, self.unit)}, the goal asks "
                f"{_cell(need, self.unit)}; artfs at {share:.2f}× the bound")

    def _goal(self) -> str:
        if self.lower_is_better:
            return f"≤ {self.target:g}× {self.against}" if self.target != 1 else f"≤ {self.against}"
        return f"≥ {self.target:g}× {self.against}"


def _cell(x: float | None, unit: str) -> str:
    return "n/a" if x is None else f"{fmt_num(x)} {unit}"


def _mount(system: str, metric: str) -> Lookup:
    return median("mount", "results", system, metric)


_CACHING = "a null pyfuse3 fs over S3 keeping its copy in LMDB under checked digests (artfs's design, no more)"
_CACHING_FLOOR = _mount("null fs over S3 + LMDB copy, digests", "cold")

GOALS = [
    Goal("cold sequential read", "MB/s", _mount("artfs", "cold"), _mount("boto3", "cold"), "boto3", 1.3,
         bound=_CACHING_FLOOR, bound_what=_CACHING),
    Goal("cold sequential read: the server's ceiling", "MB/s", _mount("artfs", "cold"),
         _mount("S3 ceiling", "cold"), "the server's ceiling (parallel 8 MiB GETs)", 0.75,
         bound=_CACHING_FLOOR, bound_what=_CACHING),
    Goal("cold sequential read: the FUSE + S3 floor", "MB/s", _mount("artfs", "cold"),
         _mount("null fs over S3", "cold"), "null pyfuse3 fs over S3", 0.8,
         bound=_CACHING_FLOOR, bound_what=_CACHING),
    Goal("cold sequential read: the FUSE + S3 floor keeping a copy", "MB/s", _mount("artfs", "cold"),
         _mount("null fs over S3 + local copy", "cold"), "null pyfuse3 fs over S3 keeping a local copy", 0.8,
         bound=_CACHING_FLOOR, bound_what=_CACHING),
    Goal("cold sequential read: the floor of artfs's design", "MB/s", _mount("artfs", "cold"), _CACHING_FLOOR,
         "null pyfuse3 fs over S3 keeping its copy in LMDB under checked digests", 0.8),
    Goal("random 4 KiB preads, cold", "ops/s", _mount("artfs", "preads"),
         best(_mount("s3fs", "preads"), _mount("rclone", "preads")), "best peer", 1.5,
         bound=_mount("S3 ceiling", "preads"),
         bound_what="the preads answered as the file lands at the server's ceiling"),
    Goal("random 4 KiB preads, cold: the server's ceiling", "ops/s", _mount("artfs", "preads"),
         _mount("S3 ceiling", "preads"), "the preads answered as fast as the file lands at the server's ceiling",
         0.8),
    Goal("random 4 KiB preads, cold: p99 latency", "ms", _mount("artfs", "preads_p99"),
         best(_mount("s3fs", "preads_p99"), _mount("rclone", "preads_p99"), lowest=True), "best peer", 1.0,
         lower_is_better=True),
    Goal("page-cache-hot re-read", "MB/s", _mount("artfs", "hot"), _mount("local disk", "hot"), "local disk", 0.8,
         bound=floor_mbps("null fs", "reread"), bound_what="the null pyfuse3 fs's re-read (floor table)"),
    Goal("staging: write 512 MiB", "MB/s", median("staging", "write_MBps", "artfs"),
         median("staging", "write_MBps", "local disk"), "local disk", 0.8,
         bound=best(floor_mbps("null fs on disk + writeback", "dd"),
                    floor_mbps("null fs on disk + xattrs + writeback", "dd")),
         bound_what="a null pyfuse3 fs keeping the file on disk (`dd`, floor table)"),
    Goal("staging: `cp -r` of small files", "files/s", floor_rate("artfs"),
         best(floor_rate("null fs"), floor_rate("null fs + writeback")), "null pyfuse3 fs", 0.8),
    Goal("staging: `cp -r`: the FUSE + disk floor", "files/s", floor_rate("artfs"),
         floor_rate("null fs on disk + writeback"), "null pyfuse3 fs keeping files on disk", 0.8),
    Goal("staging: `cp -r`: the FUSE + disk + xattrs floor", "files/s", floor_rate("artfs"),
         floor_rate("null fs on disk + xattrs + writeback"), "null pyfuse3 fs keeping files on disk, with xattrs", 0.8),
    Goal("staging: `tar x` of small files", "files/s", floor_rate("artfs", "tar"),
         best(floor_rate("null fs", "tar"), floor_rate("null fs + writeback", "tar")), "null pyfuse3 fs", 0.8),
    Goal("staging: `tar x`: the FUSE + disk floor", "files/s", floor_rate("artfs", "tar"),
         floor_rate("null fs on disk + writeback", "tar"), "null pyfuse3 fs keeping files on disk", 0.8),
    Goal("staging: `tar x`: the FUSE + disk + xattrs floor", "files/s", floor_rate("artfs", "tar"),
         floor_rate("null fs on disk + xattrs + writeback", "tar"),
         "null pyfuse3 fs keeping files on disk, with xattrs", 0.8),
    Goal("`artfs get` of the big file (S3), whole command", "s", median("core", "s3", "seconds", "artfs get big"),
         median("core", "s3", "seconds", "boto3 get big"), "boto3", 1.0, lower_is_better=True),
    Goal("`artfs get` of the big file (S3), whole command, beside boto3 as a command", "s",
         median("core", "s3", "seconds", "artfs get big"),
         median("core", "s3", "seconds", "boto3 get big, new process"), "boto3 as a new process", 1.0,
         lower_is_better=True),
    Goal("first byte, one file of a many-file version, cold", "ms", _mount("artfs", "ttfb"), fixed(100.0),
         "100 ms", 1.0, lower_is_better=True),
    Goal("`find` over a 200,000-file version, cold", "s", median("huge", "find_cold_s"), fixed(1.0), "1 s", 1.0,
         lower_is_better=True, bound=floor_seconds("null fs", "find_cold"),
         bound_what="the null pyfuse3 fs (floor table)"),
    Goal("daemon RSS after `find`, 1M files (--scale-full)", "MiB", median("scale", "files", "1000000", "rss_mib"),
         fixed(286.0), "300 MB", 1.0, lower_is_better=True),
]


def run(report: dict) -> str:
    """The goals table, printed and returned."""
    rows = [g.row(report) for g in GOALS]
    text = "## Issue 13 goals, from this run's tables\n\n" + md_table(
        ["figure", "artfs", "yardstick", "goal", "ratio", "verdict"], rows) + "\n"
    print(text, flush=True)
    report["tables"]["goals"] = {g.figure: row[1:] for g, row in zip(GOALS, rows, strict=True)}
    return text
