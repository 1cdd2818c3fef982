"""The lineage graph (core/lineage.py) drawn five ways: a tree for the terminal, JSON, graphviz DOT, a
Mermaid flowchart for Markdown pages, and SVG (DOT laid out by graphviz's `dot`).

Runs and versions are drawn differently everywhere (boxes and ellipses; `run …` lines and `name:vN`
lines); deleted and missing nodes are drawn greyed and dashed, and say so. Every name from the store goes
through `shown()` first (a run name may hold a newline), then through the target language's own quoting.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable

from artfs.cli.common import human, shown
from artfs.core.lineage import DELETED, DERIVED, INPUT, LIVE, MISSING, OUTPUT, Edge, Graph, Node, RunNode, VersionNode
from artfs.errors import ArtfsError

# --- labels ---


def version_label(node: VersionNode) -> str:
    """`animals:v3 [latest, best]`, and `(deleted)` or `(missing)` when it is."""
    text = shown(node.ref)
    if node.aliases:
        text += " [" + ", ".join(shown(a) for a in node.aliases) + "]"
    if node.state != LIVE:
        text += f" ({node.state})"
    return text


def run_label(node: RunNode) -> str:
    """`run ID "name" (job type, status)`, or `run ID (missing)`."""
    text = f"run {shown(node.run_id)}"
    if node.state == MISSING:
        return text + " (missing)"
    if node.name and node.name != node.run_id:
        text += f' "{shown(node.name)}"'
    details = [shown(d) for d in (node.job_type, _status(node)) if d]
    return text + (f" ({', '.join(details)})" if details else "")


def _status(node: RunNode) -> str | None:
    if node.status == "failed" and node.exit_code is not None:
        return f"failed, exit {node.exit_code}"
    return node.status


def label(node: Node) -> str:
    return version_label(node) if isinstance(node, VersionNode) else run_label(node)


def input_detail(edge: Edge) -> str:
    """`observed, 3 files, 1.2 MiB`: how the run learned of the version and how much of it it read."""
    parts = [p for p in (edge.how,) if p]
    if edge.files is not None:
        parts.append(f"{edge.files} file{'s' if edge.files != 1 else ''}")
    if edge.bytes is not None:
        parts.append(human(edge.bytes))
    return ", ".join(shown(p) for p in parts)


# --- text ---

_PHRASES = {  # (edge kind, walking up?) → what the line says about the node it leads to
    (OUTPUT, True): "made by",
    (INPUT, True): "read",
    (DERIVED, True): "derived from",
    (INPUT, False): "read by",
    (OUTPUT, False): "made",
    (DERIVED, False): "derived into",
}


def render_text(graph: Graph) -> str:
    """A tree for the terminal: the start, then what it came from (up) and what used it (down). A node
    reached twice is written once in full and then as `(see above)`."""
    root = graph.nodes[graph.root]
    lines = [label(root)]
    titles = ("inputs:", "outputs:") if isinstance(root, RunNode) else ("came from:", "used by:")
    for up, title, wanted in ((True, titles[0], graph.up), (False, titles[1], graph.down)):
        if not wanted:
            continue
        branch = _tree(graph, graph.root, up)
        lines.append(title if branch else f"{title} none recorded")
        lines.extend(branch)
    return "\n".join(lines) + "\n"


def _tree(graph: Graph, start: str, up: bool) -> list[str]:
    """The branch below `start`, depth first, iteratively (a long derived-from chain is no recursion)."""
    out: list[str] = []
    seen = {start}
    into, out_of = graph.adjacency()
    onward = into if up else out_of

    def children(node_id: str, prefix: str) -> list[tuple[Edge, str, bool]]:
        edges = onward.get(node_id, [])
        return [(e, prefix, i == len(edges) - 1) for i, e in enumerate(edges)]

    work = children(start, "")[::-1]  # a stack: the next line to write is on top
    while work:
        edge, prefix, last = work.pop()
        other_id = edge.source if up else edge.target
        other = graph.nodes[other_id]
        line = f"{prefix}{'└─ ' if last else '├─ '}{_PHRASES[(edge.kind, up)]} {label(other)}"
        if edge.kind == INPUT and input_detail(edge):
            line += f" — {input_detail(edge)}"
        if other_id in seen:
            out.append(line + " (see above)")
            continue
        seen.add(other_id)
        out.append(line)
        work.extend(children(other_id, prefix + ("   " if last else "│  "))[::-1])
    return out


# --- DOT and SVG ---

_RUN_STYLE = 'shape=box, style="rounded,filled", fillcolor="#dbe9fb", color="#3b6fb6"'
_VERSION_STYLE = 'shape=ellipse, style=filled, fillcolor="#fff4d6", color="#b58900"'
_FAILED_STYLE = 'fillcolor="#f9dcdc", color="#c0392b"'
_GONE_STYLE = 'style="dashed,filled", fillcolor="#eeeeee", color="#999999", fontcolor="#777777"'


def _dot_quote(text: str) -> str:
    """A DOT string: backslashes and quotes escaped (DOT gives `\\n` and friends their own meaning)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _lines(node: Node) -> list[str]:
    """A node's label as lines, for the pictures (DOT, Mermaid)."""
    if isinstance(node, VersionNode):
        lines = [shown(node.ref)]
        if node.aliases:
            lines.append(", ".join(shown(a) for a in node.aliases))
    else:
        lines = [shown(node.name or node.run_id) if node.state != MISSING else f"run {shown(node.run_id)}"]
        details = [shown(d) for d in (node.job_type, _status(node)) if d]
        if details:
            lines.append(" · ".join(details))
        if node.state != MISSING and node.name and node.name != node.run_id:
            lines.append(shown(node.run_id))
    if node.state in (DELETED, MISSING):
        lines.append(f"({node.state})")
    return lines


def _edge_text(edge: Edge) -> str:
    if edge.kind == DERIVED:
        return "derived from"
    return input_detail(edge) if edge.kind == INPUT else ""


def render_dot(graph: Graph) -> str:
    """Graphviz DOT, left to right: runs are boxes, versions ellipses, the start drawn bold; inputs are
    labelled with how they were learned, derived-from edges dashed."""
    out = ["digraph lineage {", "  rankdir=LR;", '  node [fontname="Helvetica", fontsize=11];',
           '  edge [fontname="Helvetica", fontsize=9, color="#555555"];']
    for node in graph.nodes.values():
        attrs = [_RUN_STYLE if isinstance(node, RunNode) else _VERSION_STYLE]
        if node.state != LIVE:
            attrs.append(_GONE_STYLE)
        elif isinstance(node, RunNode) and node.status in ("failed", "crashed"):
            attrs.append(_FAILED_STYLE)
        if node.id == graph.root:
            attrs.append("penwidth=2.5")
        text = "\\n".join(s.replace("\\", "\\\\").replace('"', '\\"') for s in _lines(node))
        attrs.append(f'label="{text}"')
        out.append(f"  {_dot_quote(node.id)} [{', '.join(attrs)}];")
    for edge in graph.edges:
        attrs = []
        if edge.kind == DERIVED:
            attrs.append("style=dashed")
        text = _edge_text(edge)
        if text:
            attrs.append(f"label={_dot_quote(text)}")
        tail = f" [{', '.join(attrs)}]" if attrs else ""
        out.append(f"  {_dot_quote(edge.source)} -> {_dot_quote(edge.target)}{tail};")
    out.append("}")
    return "\n".join(out) + "\n"


def render_svg(graph: Graph, run: Callable[..., subprocess.CompletedProcess[bytes]] = subprocess.run) -> bytes:
    """The DOT picture laid out by graphviz's `dot -Tsvg` (installed by scripts/bootstrap)."""
    dot = shutil.which("dot")
    if dot is None:
        raise ArtfsError("--format svg needs graphviz's `dot` (apt-get install graphviz); "
                         "or use --format dot and draw it elsewhere")
    res = run([dot, "-Tsvg"], input=render_dot(graph).encode(), capture_output=True, check=False, timeout=120)
    if res.returncode != 0:
        why = res.stderr.decode(errors="replace").strip().splitlines()
        raise ArtfsError(f"graphviz's dot failed: {why[-1] if why else f'exit status {res.returncode}'}")
    return res.stdout


# --- Mermaid ---


def _mermaid_text(text: str) -> str:
    """Text for inside a quoted Mermaid label: its entity codes stand for what would end or open markup."""
    for ch, code in (("#", "#35;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;")):
        text = text.replace(ch, code)
    return text


def render_mermaid(graph: Graph) -> str:
    """A Mermaid `flowchart` for a Markdown page: runs are rectangles, versions stadiums, derived-from
    edges dotted; classes colour runs, versions and deleted or missing nodes."""
    ids = {node_id: f"n{i}" for i, node_id in enumerate(graph.nodes)}
    out = ["flowchart LR"]
    classes: dict[str, list[str]] = {"run": [], "version": [], "failed": [], "gone": []}
    for node_id, node in graph.nodes.items():
        text = "<br/>".join(_mermaid_text(s) for s in _lines(node))
        shape = f'["{text}"]' if isinstance(node, RunNode) else f'(["{text}"])'
        out.append(f"  {ids[node_id]}{shape}")
        failed = isinstance(node, RunNode) and node.status in ("failed", "crashed")
        classes["gone" if node.state != LIVE else "failed" if failed else node.kind].append(ids[node_id])
    for edge in graph.edges:
        arrow = "-.->" if edge.kind == DERIVED else "-->"
        text = _edge_text(edge)
        middle = f'|"{_mermaid_text(text)}"|' if text else ""
        out.append(f"  {ids[edge.source]} {arrow}{middle} {ids[edge.target]}")
    out += ["  classDef run fill:#dbe9fb,stroke:#3b6fb6",
            "  classDef version fill:#fff4d6,stroke:#b58900",
            "  classDef failed fill:#f9dcdc,stroke:#c0392b",
            "  classDef gone fill:#eeeeee,stroke:#999999,stroke-dasharray:4 3,color:#777777"]
    out += [f"  class {','.join(members)} {name}" for name, members in classes.items() if members]
    out.append(f"  style {ids[graph.root]} stroke-width:3px")
    return "\n".join(out) + "\n"
