"""The lineage graph around a version or a run: the runs that made a version, what they read, what used it.

The graph is walked outward from one node, one hop at a time, through the queries runs.py answers from
small per-run and per-version keys (producing_run, run_info, runs_using). Each node costs O(1) store
requests (plus, once per artifact met, its version list, aliases and lifecycle states), never a read of
every run: a store with 10,000 runs draws one model's lineage as fast as a store with ten.

Nothing here fails because a neighbour is gone. A run whose records are missing or unreadable, a version
whose record is gone, a version that was deleted: each becomes a node that says so. Only the start itself
must exist (a mistyped REF or run id is the user's error, not a picture of nothing).

Edges point the way data flows: version → run (the run read it: `input`, with how and how much), run →
version (the run made it: `output`), and version → version (`derived`: the version a staging tree or a
`put --base` started from, drawn only where no run is known to have made it).
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from artfs.core import lifecycle, runs
from artfs.core.names import check_name, parse_ref, parse_version
from artfs.core.records import VersionRecord
from artfs.core.repo import Repo
from artfs.errors import ArtfsError, IntegrityError, InvalidName, NotFound

VERSION: Literal["version"] = "version"
RUN: Literal["run"] = "run"
INPUT, OUTPUT, DERIVED = "input", "output", "derived"
LIVE, DELETED, MISSING = "live", "deleted", "missing"
FETCH_THREADS = 16  # runs read at once when a version has many users (S3: requests are latency-bound)


@dataclass(frozen=True)
class VersionNode:
    """A version in the graph. `state` is live, deleted (soft-deleted or past its TTL; its record may even
    be gone) or missing (its record cannot be read: `problem` says why)."""

    artifact: str
    version: int
    state: str = LIVE
    aliases: tuple[str, ...] = ()  # `latest` first when it is the newest live version
    type: str | None = None
    digest: str | None = None
    files: int | None = None
    bytes: int | None = None
    created: float | None = None
    run: str | None = None
    parent: int | None = None
    deleted_at: float | None = None
    problem: str | None = None
    kind: Literal["version"] = VERSION

    @property
    def id(self) -> str:
        return f"version:{self.artifact}:v{self.version}"

    @property
    def ref(self) -> str:
        return f"{self.artifact}:v{self.version}"


@dataclass(frozen=True)
class RunNode:
    """A run in the graph; `state` missing when its records cannot be read (`problem` says why)."""

    run_id: str
    state: str = LIVE
    name: str | None = None
    job_type: str | None = None
    status: str | None = None
    started: float | None = None
    ended: float | None = None
    exit_code: int | None = None
    problem: str | None = None
    kind: Literal["run"] = RUN

    @property
    def id(self) -> str:
        return f"run:{self.run_id}"


Node = VersionNode | RunNode


@dataclass(frozen=True)
class Edge:
    """`source` → `target` (node ids), the way data flowed. Inputs say how the run learned of the version
    (observed through a mount, declared through the API) and how much it read."""

    source: str
    target: str
    kind: str  # INPUT, OUTPUT or DERIVED
    how: str | None = None
    files: int | None = None
    bytes: int | None = None


@dataclass
class Graph:
    """Nodes by id and the edges between them; `root` is the node the walk started from."""

    root: str
    up: bool
    down: bool
    depth: int | None
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)

    def adjacency(self) -> tuple[dict[str, list[Edge]], dict[str, list[Edge]]]:
        """(edges into each node, edges out of each node), in the order they were found."""
        into: dict[str, list[Edge]] = {}
        out: dict[str, list[Edge]] = {}
        for e in self.edges:
            into.setdefault(e.target, []).append(e)
            out.setdefault(e.source, []).append(e)
        return into, out

    def as_json(self) -> dict[str, Any]:
        nodes = []
        for node in self.nodes.values():
            data = asdict(node)
            data["id"] = node.id
            if isinstance(node, VersionNode):
                data["ref"] = node.ref
                data["aliases"] = list(node.aliases)
            nodes.append(data)
        return {
            "root": self.root, "up": self.up, "down": self.down, "depth": self.depth, "nodes": nodes,
            "edges": [{"from": e.source, "to": e.target, "kind": e.kind, "how": e.how, "files": e.files,
                       "bytes": e.bytes} for e in self.edges],
        }


def lineage(repo: Repo, target: str, *, up: bool = True, down: bool = True, depth: int | None = None) -> Graph:
    """The graph around `target`: a REF (`animals`, `animals:v3`, `animals:best`) or a run id.

    `up` walks to what it came from, `down` to what used it; `depth` bounds the walk in steps, a step being
    one run (with the versions on its far side) or one derived-from hop: from a model, depth 1 is the run
    that made it and that run's inputs. Raises NotFound when `target` is neither a version nor a run."""
    if depth is not None and depth < 1:
        raise ArtfsError(f"invalid depth {depth}: it must be at least 1")
    walk = _Walk(repo, up, down, depth)
    start = _start(repo, walk, target)
    walk.run_from(start)
    return walk.graph


def _start(repo: Repo, walk: _Walk, target: str) -> Node:
    """The node `target` names. With a ':' it can only be a version; a bare word is an artifact's latest
    if there is such an artifact, else a run id."""
    name, sep, ref = target.partition(":")
    if sep:
        parsed = parse_ref(target)
        number = parse_version(ref) if ref else None
        if number is None:
            return walk.version_node(repo.resolve(parsed))
        repo.require_artifact(name)
        version = walk.version(name, number)
        if version.state == MISSING:  # a version never claimed, or one whose record cannot be read
            raise NotFound(version.problem or f"{name}:v{number} does not exist")
        return version
    try:
        check_name(target)
        is_artifact = bool(repo.version_numbers(target))
    except InvalidName:
        is_artifact = False
    if is_artifact:
        return walk.version_node(repo.resolve(target))
    run = walk.run(target)
    if run.state == MISSING:
        raise NotFound(f"no artifact or run {target!r} in {repo.store.uri}")
    return run


@dataclass
class _Artifact:
    """What the graph shows of every version of one artifact, read once per walk."""

    aliases: dict[int, list[str]]
    deleted: dict[int, float]  # version → when it was deleted


class _Walk:
    """One breadth-first walk. Runs and artifacts are read at most once each (memoised)."""

    def __init__(self, repo: Repo, up: bool, down: bool, depth: int | None) -> None:
        self.repo = repo
        self.up, self.down, self.depth = up, down, depth
        self.graph = Graph(root="", up=up, down=down, depth=depth)
        self._artifacts: dict[str, _Artifact] = {}
        self._records: dict[tuple[str, int], VersionRecord | None] = {}
        self._infos: dict[str, runs.RunInfo | None] = {}
        self._fetched: dict[str, runs.RunInfo | str] = {}  # read ahead by _fetch_runs, not in the graph yet
        self._inputs: dict[str, dict[tuple[str, int], runs.RunInput]] = {}  # run → its inputs by version
        self._edges: set[tuple[str, str, str]] = set()

    # --- nodes ---

    def _artifact(self, name: str) -> _Artifact:
        art = self._artifacts.get(name)
        if art is not None:
            return art
        deleted: dict[int, float] = {}
        aliases: dict[int, list[str]] = {}
        try:
            states = lifecycle.version_states(self.repo, name)
            deleted = {n: s.deleted_at or 0.0 for n, s in states.items() if not lifecycle.is_live(s)}
            live = sorted(n for n in states if n not in deleted)
            if live:
                aliases.setdefault(live[-1], []).append("latest")
            for alias, n in sorted(self.repo.aliases(name).items()):  # never a deleted version's
                aliases.setdefault(n, []).append(alias)
        except (NotFound, IntegrityError):  # a damaged log: the picture goes on without these marks
            pass
        art = self._artifacts[name] = _Artifact(aliases, deleted)
        return art

    def version_node(self, rec: VersionRecord) -> VersionNode:
        self._records[(rec.artifact, rec.version)] = rec
        return self.version(rec.artifact, rec.version)

    def version(self, name: str, number: int) -> VersionNode:
        """The node of `name:vN`, added to the graph on first sight."""
        node_id = f"version:{name}:v{number}"
        known = self.graph.nodes.get(node_id)
        if isinstance(known, VersionNode):
            return known
        try:
            check_name(name)
        except InvalidName as e:  # a damaged run record names no artifact artfs could have written
            node = self.graph.nodes[node_id] = VersionNode(name, number, MISSING, problem=str(e))
            return node
        art = self._artifact(name)
        problem = None
        if (name, number) in self._records:
            rec = self._records[(name, number)]
        else:
            try:
                rec = self.repo.version(name, number)
            except (NotFound, IntegrityError) as e:
                rec, problem = None, str(e)
            self._records[(name, number)] = rec
        deleted_at = art.deleted.get(number)
        state = DELETED if deleted_at is not None else LIVE if rec is not None else MISSING
        aliases = tuple(art.aliases.get(number, ())) if state == LIVE else ()
        if rec is None:
            node = VersionNode(name, number, state, aliases, deleted_at=deleted_at,
                               problem=problem if state == MISSING else None)
        else:
            node = VersionNode(name, number, state, aliases, type=rec.type, digest=rec.digest, files=rec.files,
                               bytes=rec.bytes, created=rec.created, run=rec.run, parent=rec.parent,
                               deleted_at=deleted_at)
        self.graph.nodes[node_id] = node
        return node

    def run(self, run_id: str) -> RunNode:
        """The node of run `run_id`, added to the graph on first sight (missing if it cannot be read)."""
        node_id = f"run:{run_id}"
        known = self.graph.nodes.get(node_id)
        if isinstance(known, RunNode):
            return known
        info = self._fetched.pop(run_id) if run_id in self._fetched else self._run_info(run_id)
        if isinstance(info, runs.RunInfo):
            self._infos[run_id] = info
            r = info.record
            node = RunNode(run_id, LIVE, name=r.name, job_type=r.job_type, status=info.status, started=r.started,
                           ended=info.ended, exit_code=info.exit_code)
        else:
            self._infos[run_id] = None
            node = RunNode(run_id, MISSING, problem=info)
        self.graph.nodes[node_id] = node
        return node

    def _run_info(self, run_id: str) -> runs.RunInfo | str:
        """The run's info, or why it cannot be read."""
        try:
            return runs.run_info(self.repo, run_id)
        except (NotFound, IntegrityError, InvalidName) as e:
            return str(e)

    def _fetch_runs(self, run_ids: list[str]) -> None:
        """Read many runs at once (a version read by 1,000 runs): each costs a few small requests, which on
        S3 are latency, not bandwidth, so they go out in parallel. Only store calls run in the threads."""
        todo = [r for r in dict.fromkeys(run_ids) if f"run:{r}" not in self.graph.nodes and r not in self._fetched]
        if len(todo) < 2:
            return
        with ThreadPoolExecutor(min(FETCH_THREADS, len(todo))) as pool:
            self._fetched.update(zip(todo, pool.map(self._run_info, todo), strict=True))

    # --- edges ---

    def _edge(self, edge: Edge) -> None:
        key = (edge.source, edge.target, edge.kind)
        if key not in self._edges:
            self._edges.add(key)
            self.graph.edges.append(edge)

    def _input_edge(self, version: VersionNode, run_id: str) -> None:
        info = self._infos.get(run_id)
        used = None
        if info is not None:
            if run_id not in self._inputs:
                self._inputs[run_id] = {(i.artifact, i.version): i for i in info.inputs}
            used = self._inputs[run_id].get((version.artifact, version.version))
        if used is None:
            self._edge(Edge(version.id, f"run:{run_id}", INPUT))
        else:
            self._edge(Edge(version.id, f"run:{run_id}", INPUT, how=used.how, files=used.files, bytes=used.bytes))

    # --- the walk ---

    def run_from(self, start: Node) -> None:
        """Breadth first from `start`: each node is expanded once per direction; a node's distance is the
        number of steps (runs entered, derived-from hops) from the start, and no step goes past `depth`."""
        self.graph.root = start.id
        queue: deque[tuple[Node, int, str]] = deque()
        first = 1 if isinstance(start, RunNode) else 0  # a run's own inputs and outputs are its first step
        for direction, wanted in (("up", self.up), ("down", self.down)):
            if wanted:
                queue.append((start, first, direction))
        expanded: set[tuple[str, str]] = set()
        while queue:
            node, dist, direction = queue.popleft()
            if (node.id, direction) in expanded:  # records cannot form a cycle; a damaged store might
                continue
            expanded.add((node.id, direction))
            if isinstance(node, RunNode):
                for nxt in self._run_step(node, direction):
                    queue.append((nxt, dist, direction))
            elif self.depth is None or dist < self.depth:
                for nxt in self._version_step(node, direction):
                    queue.append((nxt, dist + 1, direction))
        self._close_run_edges()

    def _version_step(self, node: VersionNode, direction: str) -> list[Node]:
        if direction == "up":
            rec = self._records.get((node.artifact, node.version))
            if rec is None:
                return []
            producer = runs.producing_run(self.repo, rec)
            if producer is not None:
                run = self.run(producer)
                self._edge(Edge(run.id, node.id, OUTPUT))
                return [run]
            if rec.parent is not None:
                parent = self.version(node.artifact, rec.parent)
                self._edge(Edge(parent.id, node.id, DERIVED))
                return [parent]
            return []
        out: list[Node] = []
        try:
            users = runs.runs_using(self.repo, node.artifact, node.version)
        except InvalidName:  # a missing node named by a damaged record: nothing can be filed under it
            return out
        self._fetch_runs(users)
        for run_id in users:
            run = self.run(run_id)
            self._input_edge(node, run_id)
            out.append(run)
        return out

    def _run_step(self, node: RunNode, direction: str) -> list[Node]:
        info = self._infos.get(node.run_id)
        if info is None:
            return []
        out: list[Node] = []
        if direction == "up":
            for used in info.inputs:
                version = self.version(used.artifact, used.version)
                self._input_edge(version, node.run_id)
                out.append(version)
        else:
            for artifact, number in info.outputs:
                version = self.version(artifact, number)
                self._edge(Edge(node.id, version.id, OUTPUT))
                out.append(version)
        return out

    def _close_run_edges(self) -> None:
        """Edges between nodes already in the graph that the walk's direction skipped (a run met on the way
        up that also made another version shown): the picture is of every known link among its nodes."""
        for run_id, info in self._infos.items():
            if info is None:
                continue
            for used in info.inputs:
                version_id = f"version:{used.artifact}:v{used.version}"
                node = self.graph.nodes.get(version_id)
                if isinstance(node, VersionNode):
                    self._input_edge(node, run_id)
            for artifact, number in info.outputs:
                version_id = f"version:{artifact}:v{number}"
                if version_id in self.graph.nodes:
                    self._edge(Edge(f"run:{run_id}", version_id, OUTPUT))
