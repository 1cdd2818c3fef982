"""`artfs lineage` as a user runs it: a chain of three real `artfs run`s (preprocess → train → evaluate)
whose outputs are made by `artfs put` inside the run and whose inputs are declared through the core API,
drawn up from the model and down from the dataset in every format; and the bad-input catalogue.

The same chain is then made as the demo makes it, through a real mount with nothing declared: the inputs
are what the mount observed, the first output a seal through the mount."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys
import xml.etree.ElementTree as ET

import pytest

from tests.support.cli import artfs_cmd, run_artfs
from tests.support.polling import eventually
from tests.support.trees import write_tree

# What a run's CMD does here: declare REF as its input (as the Python API does), then maybe `artfs put`.
STEP = """
import os, subprocess, sys
from artfs.core import runs
from artfs.settings import Settings
store, ref, *put = sys.argv[1:]
repo = Settings.from_env().open_repo(store)
rec = repo.resolve(ref)
runs.record_input(repo, os.environ["ARTFS_RUN_ID"], rec, "declared", rec.files, rec.bytes, "api")
repo.close()
if put:
    subprocess.run([sys.executable, "-m", "artfs", "put", *put, "--store", store], check=True)
"""


def step(store: str, name: str, job_type: str, ref: str, *put: str) -> str:
    """One `artfs run` of STEP; its run id."""
    res = run_artfs("run", "--name", name, "--job-type", job_type, "--store", store, "--",
                    sys.executable, "-c", STEP, store, ref, *put)
    return next(line.split()[2] for line in res.stderr.splitlines() if line.startswith("artfs: run ")
                and line.endswith("started"))


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lineage")
    store = str(tmp / "store")
    write_tree(tmp / "animals", {"cat.png": b"cat" * 100, "dog.png": b"dog" * 100})
    write_tree(tmp / "clean", {"cat.npy": b"c" * 50})
    write_tree(tmp / "model", {"weights.bin": b"w" * 70})
    run_artfs("put", str(tmp / "animals"), "animals", "--store", store)
    runs = {
        "prep": step(store, "prep", "preprocess", "animals:latest", str(tmp / "clean"), "animals-clean"),
        "fit": step(store, "fit", "train", "animals-clean", str(tmp / "model"), "resnet", "--type", "model",
                    "--alias", "best"),
        "eval": step(store, "eval", "evaluate", "resnet:best"),
    }
    return store, runs, tmp


def lineage(store: str, *args: str, check: bool = True):
    return run_artfs("lineage", *args, "--store", store, check=check)


VERSIONS = {"version:animals:v0", "version:animals-clean:v0", "version:resnet:v0"}


def test_up_from_the_model_in_text_and_json(chain):
    store, runs, _ = chain
    text = lineage(store, "resnet:latest", "--up").stdout.splitlines()
    assert text[0] == "resnet:v0 [latest, best]" and text[1] == "came from:"
    assert f'made by run {runs["fit"]} "fit" (train, finished)' in text[2]
    assert "read animals-clean:v0 [latest] — declared, 1 file, 50 B" in text[3]
    assert f'made by run {runs["prep"]} "prep" (preprocess, finished)' in text[4]
    assert "read animals:v0 [latest] — declared, 2 files, 600 B" in text[5] and len(text) == 6

    graph = json.loads(lineage(store, "resnet", "--up", "--format", "json").stdout)
    assert graph["root"] == "version:resnet:v0" and (graph["up"], graph["down"]) == (True, False)
    nodes = {n["id"]: n for n in graph["nodes"]}
    assert set(nodes) == VERSIONS | {f"run:{runs['prep']}", f"run:{runs['fit']}"}
    assert nodes["version:resnet:v0"]["aliases"] == ["latest", "best"]
    assert nodes["version:resnet:v0"]["run"] == runs["fit"] and nodes["version:resnet:v0"]["state"] == "live"
    assert nodes[f"run:{runs['fit']}"]["job_type"] == "train" and nodes[f"run:{runs['fit']}"]["kind"] == "run"
    edges = {(e["from"], e["to"], e["kind"]) for e in graph["edges"]}
    assert edges == {
        ("version:animals:v0", f"run:{runs['prep']}", "input"),
        (f"run:{runs['prep']}", "version:animals-clean:v0", "output"),
        ("version:animals-clean:v0", f"run:{runs['fit']}", "input"),
        (f"run:{runs['fit']}", "version:resnet:v0", "output"),
    }
    assert json.loads(lineage(store, "resnet", "--up", "--json").stdout) == graph
    one = json.loads(lineage(store, "resnet", "--up", "--depth", "1", "--format", "json").stdout)
    assert {n["id"] for n in one["nodes"]} == {"version:resnet:v0", f"run:{runs['fit']}", "version:animals-clean:v0"}


def test_down_from_the_dataset_in_text_dot_mermaid_and_svg(chain):
    store, runs, tmp = chain
    text = lineage(store, "animals", "--down").stdout.splitlines()
    assert text[:2] == ["animals:v0 [latest]", "used by:"]
    order = [runs["prep"], "animals-clean:v0", runs["fit"], "resnet:v0 [latest, best]", runs["eval"]]
    assert [next(i for i, line in enumerate(text) if what in line) for what in order] == [2, 3, 4, 5, 6]
    assert "(evaluate, failed, exit 0)" not in text[6] and "(evaluate, finished)" in text[6]

    every = VERSIONS | {f"run:{r}" for r in runs.values()}
    dot = lineage(store, "animals", "--down", "--format", "dot").stdout
    assert dot.startswith("digraph lineage {")
    for run_id in runs.values():
        assert f'"run:{run_id}" [shape=box' in dot
    assert '"version:resnet:v0" [shape=ellipse' in dot and 'label="resnet:v0\\nlatest, best"' in dot
    assert f'"version:animals:v0" -> "run:{runs["prep"]}" [label="declared, 2 files, 600 B"];' in dot

    mermaid = lineage(store, "animals", "--down", "--format", "mermaid").stdout.splitlines()
    assert mermaid[0] == "flowchart LR"
    assert sum(1 for line in mermaid if line.strip().startswith("n") and "-->" in line) == 5
    assert any('(["resnet:v0<br/>latest, best"])' in line for line in mermaid)
    assert sum(1 for line in mermaid if '["fit<br/>train · finished<br/>' in line) == 1

    out = tmp / "down.svg"
    assert lineage(store, "animals", "--down", "--format", "svg", "-o", str(out)).stdout == ""
    svg = ET.parse(out).getroot()
    ns = {"svg": "http://www.w3.org/2000/svg"}
    titles = {g.find("svg:title", ns).text for g in svg.iter("{http://www.w3.org/2000/svg}g")
              if g.get("class") == "node"}
    assert titles == every
    same = lineage(store, "animals", "--down", "--format", "svg").stdout
    assert ET.fromstring(same).tag == "{http://www.w3.org/2000/svg}svg"


def test_both_ways_from_a_run_and_from_the_middle(chain):
    store, runs, _ = chain
    text = lineage(store, runs["fit"]).stdout.splitlines()
    assert text[0] == f'run {runs["fit"]} "fit" (train, finished)'
    assert text[1] == "inputs:" and "read animals-clean:v0" in text[2]
    assert "outputs:" in text and any("made resnet:v0" in line for line in text)
    graph = json.loads(lineage(store, "animals-clean:v0", "--format", "json").stdout)
    assert len(graph["nodes"]) == 6 and len(graph["edges"]) == 5


@pytest.mark.parametrize("args, match", [
    (("nosuch",), "no artifact or run 'nosuch'"),
    (("20261201-025424.123-3fa9c1b2",), "no artifact or run '20261201-025424.123-3fa9c1b2'"),
    (("animals:v9",), "animals:v9 does not exist"),
    (("nosuch:v0", "--json"), "artifact 'nosuch' does not exist"),
    (("animals:nosuch",), "no alias 'nosuch'"),
    (("bad name",), "no artifact or run"),
    (("bad/name:v0",), "invalid artifact name"),
    (("animals", "--depth", "0"), "invalid --depth '0'"),
    (("animals", "--depth", "two"), "invalid --depth 'two'"),
    (("animals", "--json", "--format", "dot"), "give one of --json and --format dot"),
])
def test_bad_input_is_one_line(chain, args, match):
    store, _, _ = chain
    res = lineage(store, *args, check=False)
    lines = res.stderr.strip().splitlines()
    assert res.returncode != 0
    assert res.stdout == "" if "--json" not in args else json.loads(res.stdout)["error"] in lines[0]
    assert len(lines) == 1 and match in lines[0] and "Traceback" not in res.stderr, res.stderr


def test_svg_without_graphviz_says_so(chain, tmp_path):
    store, _, _ = chain
    bin_dir = tmp_path / "bin"  # a PATH with no `dot` on it
    bin_dir.mkdir()
    res = run_artfs("lineage", "animals", "--format", "svg", "--store", store, check=False,
                    env={"PATH": str(bin_dir)})
    assert res.returncode == 1 and res.stderr.strip().splitlines() == [
        "artfs: --format svg needs graphviz's `dot` (apt-get install graphviz); or use --format dot and draw "
        "it elsewhere"]
    res = run_artfs("lineage", "animals", "-o", str(tmp_path / "no" / "such" / "dir.txt"), "--store", store,
                    check=False)
    assert res.returncode == 1 and "cannot write" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert shutil.which("dot") is not None, "graphviz is missing: scripts/bootstrap installs it"
    assert not os.path.exists(tmp_path / "no")


def test_renderers_on_a_hand_built_graph_with_gone_nodes_and_awkward_names():
    """Deleted and missing nodes say so in every format; a run name holding a newline, quotes, `#` and `<`
    stays one line of text and valid DOT (graphviz parses it) and Mermaid."""
    from artfs.cli import lineage_render as render
    from artfs.core.lineage import DERIVED, INPUT, OUTPUT, Edge, Graph, RunNode, VersionNode

    odd = 'a "b"\n#c <d>\\'
    v0 = VersionNode("animals", 0, "deleted", deleted_at=1.0)
    v1 = VersionNode("animals", 1, aliases=("latest", "best"))
    ghost = RunNode("20261201-025424.123-3fa9c1b2", "missing", problem="run does not exist")
    fit = RunNode("20261201-025425.000-00000000", name=odd, job_type="train", status="crashed")
    model = VersionNode("resnet", 4, "missing", problem="gone")
    graph = Graph(root=v1.id, up=True, down=True, depth=None,
                  nodes={n.id: n for n in (v0, v1, ghost, fit, model)},
                  edges=[Edge(v0.id, v1.id, DERIVED), Edge(ghost.id, v1.id, OUTPUT),
                         Edge(v1.id, fit.id, INPUT, "observed", 2, 2048), Edge(fit.id, model.id, OUTPUT)])

    text = render.render_text(graph).splitlines()
    assert text == [
        "animals:v1 [latest, best]",
        "came from:",
        "├─ derived from animals:v0 (deleted)",
        "└─ made by run 20261201-025424.123-3fa9c1b2 (missing)",
        "used by:",
        "└─ read by run 20261201-025425.000-00000000 \"$'a \"b\"\\n#c <d>\\\\'\" (train, crashed) — observed, 2 files, "
        "2.0 KiB",
        "   └─ made resnet:v4 (missing)",
    ]

    dot = render.render_dot(graph)
    assert dot.count("(deleted)") == 1 and dot.count("(missing)") == 2 and "style=dashed" in dot
    svg = ET.fromstring(render.render_svg(graph))  # graphviz accepted the quoting
    texts = "".join(svg.itertext())
    assert "a \"b\"\\n#c <d>\\\\" in texts and "animals:v0" in texts

    mermaid = render.render_mermaid(graph)
    assert "#quot;b#quot;" in mermaid and "#35;c #lt;d#gt;" in mermaid and "\n" not in mermaid.split("flowchart")[0]
    assert "n0 -.->|\"derived from\"| n1" in mermaid and "class n0,n2,n4 gone" in mermaid
    assert "class n3 failed" in mermaid and "style n1 stroke-width:3px" in mermaid


def test_the_chain_captured_through_a_mount(mount_artfs, local_store_uri, tmp_path):
    """As the demo does it: nothing declared. A preprocessing run reads `animals:latest` through the mount and
    seals `animals-clean` there, a training run reads that through the mount and `artfs put`s a model, an
    evaluation reads the model; lineage draws the chain from what the mount observed."""
    store = local_store_uri
    write_tree(tmp_path / "animals", {"cat.png": b"cat" * 100, "dog.png": b"dog" * 100})
    write_tree(tmp_path / "model", {"weights.bin": b"w" * 70})
    run_artfs("put", str(tmp_path / "animals"), "animals", "--store", store)
    m = mount_artfs(store, poll="0.2s")
    mnt = m.path
    (mnt / "animals-clean").mkdir()
    artfs = " ".join(shlex.quote(a) for a in artfs_cmd())
    clean = mnt / "animals-clean"
    scripts = {
        "prep": f"head -c 100 {mnt}/animals/latest/cat.png > {clean}/staging/cat.png && "
                f"cat {mnt}/animals/latest/dog.png > /dev/null && {artfs} seal {clean}/staging",
        "fit": f"cat {clean}/latest/cat.png > /dev/null && "
               f"{artfs} put {tmp_path}/model resnet --type model --alias best --store {store}",
        "eval": f"cat {mnt}/resnet/best/weights.bin > /dev/null",
    }
    ids = {}
    for name, script in scripts.items():
        if name == "eval":  # a version put from the CLI shows in the mount at its next poll
            eventually((mnt / "resnet" / "best" / "weights.bin").exists, timeout=30, what="resnet in the mount")
        res = run_artfs("run", "--name", name, "--job-type", name, "--store", store, "--", "sh", "-c", script)
        ids[name] = re.search(r"artfs: run (\S+) ", res.stderr).group(1)

    def graph(*args: str) -> dict:
        return json.loads(lineage(store, *args, "--format", "json").stdout)

    def observed(g: dict) -> set[tuple[str, str, int | None]]:
        return {(e["from"], e["how"], e["files"]) for e in g["edges"] if e["kind"] == "input"}

    want = {("version:animals:v0", "observed", 2), ("version:animals-clean:v0", "observed", 1)}
    eventually(lambda: observed(graph("resnet", "--up")) == want, timeout=20, what="the inputs observed")
    up = graph("resnet", "--up")
    assert {n["id"] for n in up["nodes"]} == {"version:resnet:v0", f"run:{ids['fit']}", "version:animals-clean:v0",
                                             f"run:{ids['prep']}", "version:animals:v0"}
    assert (f"run:{ids['prep']}", "version:animals-clean:v0", "output") in {
        (e["from"], e["to"], e["kind"]) for e in up["edges"]}
    eventually(lambda: len(graph("animals", "--down")["nodes"]) == 6, timeout=20, what="the evaluation's input")
    text = lineage(store, "animals", "--down").stdout
    for line in (f'read by run {ids["prep"]} "prep" (prep, finished) — observed, 2 files, 600 B',
                 "made animals-clean:v0 [latest]", f'read by run {ids["fit"]} "fit" (fit, finished) — observed',
                 "made resnet:v0 [latest, best]", f'read by run {ids["eval"]} "eval" (eval, finished) — observed'):
        assert line in text, text
    svg = ET.fromstring(lineage(store, "animals", "--down", "--format", "svg").stdout)
    assert sum(1 for g in svg.iter("{http://www.w3.org/2000/svg}g") if g.get("class") == "node") == 6


def test_a_node_reached_twice_is_written_once_in_full():
    """A diamond (one run made two versions a second run read): the shared run's branch is not repeated."""
    from artfs.cli import lineage_render as render
    from artfs.core.lineage import INPUT, OUTPUT, Edge, Graph, RunNode, VersionNode

    prep, fit = RunNode("20261201-000000.000-aaaa", name="prep"), RunNode("20261201-000001.000-bbbb", name="fit")
    raw, train, test, model = (VersionNode(n, 0) for n in ("raw", "train", "test", "model"))
    graph = Graph(root=model.id, up=True, down=False, depth=None,
                  nodes={n.id: n for n in (prep, fit, raw, train, test, model)},
                  edges=[Edge(raw.id, prep.id, INPUT), Edge(prep.id, train.id, OUTPUT), Edge(prep.id, test.id, OUTPUT),
                         Edge(train.id, fit.id, INPUT), Edge(test.id, fit.id, INPUT), Edge(fit.id, model.id, OUTPUT)])
    assert render.render_text(graph).splitlines() == [
        "model:v0",
        "came from:",
        '└─ made by run 20261201-000001.000-bbbb "fit"',
        "   ├─ read train:v0",
        '   │  └─ made by run 20261201-000000.000-aaaa "prep"',
        "   │     └─ read raw:v0",
        "   └─ read test:v0",
        '      └─ made by run 20261201-000000.000-aaaa "prep" (see above)',
    ]
