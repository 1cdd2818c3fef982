"""`artfs run`, `artfs runs`, `artfs runs show` as a user runs them: real processes, exit statuses, signals."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time

from artfs.core import runs
from tests.support.cli import artfs_cmd, run_artfs
from tests.support.repos import fresh_repo
from tests.support.trees import write_tree

ARTFS = shlex.join([sys.executable, "-m", "artfs"])  # `artfs` inside CMD's shell


def runs_json(store: str, *args: str) -> list[dict]:
    return json.loads(run_artfs("runs", "--store", store, "--json", *args).stdout)


def show(store: str, run_id: str) -> dict:
    return json.loads(run_artfs("runs", "show", run_id, "--store", store, "--json").stdout)


def one_line_error(res: subprocess.CompletedProcess[str], match: str) -> None:
    assert res.returncode != 0, res.stdout
    lines = res.stderr.strip().splitlines()
    assert "Traceback" not in res.stderr and len(lines) == 1, res.stderr
    assert match in lines[0], lines[0]


def wait_for(what, timeout: float = 30.0, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def test_exit_status_passes_through_and_run_is_recorded(local_store_uri, tmp_path):
    write_tree(tmp_path / "model", {"w.bin": b"weights"})
    inner = f"{ARTFS} put {shlex.quote(str(tmp_path / 'model'))} resnet --type model && exit 3"
    res = run_artfs("run", "--store", local_store_uri, "--name", "train-1", "--job-type", "train",
                    "--config", "lr=0.01", "--config", "opt=adam", "--", "sh", "-c", inner, check=False)
    assert res.returncode == 3, res.stderr
    [run] = runs_json(local_store_uri)
    assert (run["name"], run["job_type"], run["status"], run["exit_code"]) == ("train-1", "train", "failed", 3)
    assert run["config"] == {"lr": 0.01, "opt": "adam"} and run["command"] == ["sh", "-c", inner]
    assert run["outputs"] == [{"ref": "resnet:v0", "artifact": "resnet", "version": 0}]
    assert run["cwd"] == os.getcwd() and run["ended"] >= run["started"]
    text = run_artfs("runs", "--store", local_store_uri).stdout
    assert "train-1" in text and "failed (3)" in text and "resnet:v0" in text
    repo = fresh_repo(local_store_uri, tmp_path / "cache")
    try:  # an input, as a mount would record it
        runs.record_input(repo, run["id"], repo.version("resnet", 0), "observed", 2, 3000, "mount-1")
    finally:
        repo.close()
    shown = run_artfs("runs", "show", run["id"], "--store", local_store_uri).stdout
    assert "failed (3)" in shown and "lr = 0.01" in shown and "resnet:v0" in shown
    assert "resnet:v0  observed  2 files, 2.9 KiB" in shown

    assert run_artfs("run", "--store", local_store_uri, "--", "true").returncode == 0
    newest = runs_json(local_store_uri)
    assert [r["status"] for r in newest] == ["finished", "failed"]
    assert [r["id"] for r in runs_json(local_store_uri, "--limit", "1")] == [newest[0]["id"]]


def test_config_file_command_not_found_and_nested_run_joins(local_store_uri, tmp_path):
    (tmp_path / "params.json").write_text(json.dumps({"lr": 0.1, "epochs": 3}))
    res = run_artfs("run", "--store", local_store_uri, "--config-file", str(tmp_path / "params.json"),
                    "--config", "lr=0.5", "--", "no-such-command-artfs", check=False)
    assert res.returncode == 127 and "command not found" in res.stderr
    [run] = runs_json(local_store_uri)
    assert run["config"] == {"lr": 0.5, "epochs": 3} and (run["status"], run["exit_code"]) == ("failed", 127)

    # inside a run, `artfs run` joins it: CMD runs under the same run id, and no second run is recorded
    res = run_artfs("run", "--store", local_store_uri, "--", "sh", "-c",
                    f"echo $ARTFS_RUN_ID; {ARTFS} run --name inner -- sh -c 'echo $ARTFS_RUN_ID'")
    outer, inner = res.stdout.split()
    assert outer == inner and "joins it" in res.stderr
    assert [r["id"] for r in runs_json(local_store_uri)][0] == outer and len(runs_json(local_store_uri)) == 2


def test_sigkilled_run_shows_as_crashed(local_store_uri, tmp_path):
    env = {"ARTFS_RUN_HEARTBEAT": "0.2"}
    pidfile = tmp_path / "cmd.pid"
    proc = subprocess.Popen(artfs_cmd("run", "--store", local_store_uri, "--", "sh", "-c",
                                      f"echo $$ > {pidfile}; exec sleep 60"),
                            env={**os.environ, **env}, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: pidfile.exists() and pidfile.read_text().strip())
        [run] = runs_json(local_store_uri)
        assert run["status"] == "running"
        assert wait_for(lambda: show(local_store_uri, run["id"])["last_heartbeat"] is not None)
    finally:
        proc.kill()
        proc.wait()
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
    crashed = wait_for(lambda: show(local_store_uri, run["id"])["status"] == "crashed")
    assert crashed, show(local_store_uri, run["id"])
    assert "crashed" in run_artfs("runs", "--store", local_store_uri).stdout


def test_signals_are_forwarded_and_orphans_stay_in_the_tree(local_store_uri, tmp_path):
    """SIGTERM to `artfs run` reaches CMD (which dies of it: 128+15); an orphan of CMD's tree is
    reparented to `artfs run` (a child subreaper), not to init."""
    ppid_file = tmp_path / "ppid"
    (tmp_path / "orphan.py").write_text(
        f"import os, time\ntime.sleep(0.5)\nopen({str(ppid_file)!r}, 'w').write(str(os.getppid()))\n")
    orphan = shlex.join([sys.executable, str(tmp_path / "orphan.py")])
    script = f"({orphan} &); exec sleep 60"
    proc = subprocess.Popen(artfs_cmd("run", "--store", local_store_uri, "--", "sh", "-c", script),
                            stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: ppid_file.exists() and ppid_file.read_text())
        assert int(ppid_file.read_text()) == proc.pid
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 128 + signal.SIGTERM
    finally:
        proc.kill()
        proc.wait()
    [run] = runs_json(local_store_uri)
    assert (run["status"], run["exit_code"]) == ("failed", 128 + signal.SIGTERM)


def test_runs_on_s3(s3_store_uri, tmp_path):
    write_tree(tmp_path / "data", {"a.txt": b"a"})
    res = run_artfs("run", "--store", s3_store_uri, "--job-type", "prep", "--", "sh", "-c",
                    f"{ARTFS} put {shlex.quote(str(tmp_path / 'data'))} animals")
    assert res.returncode == 0
    [run] = runs_json(s3_store_uri)
    assert (run["status"], run["job_type"]) == ("finished", "prep")
    assert [o["ref"] for o in run["outputs"]] == ["animals:v0"]
    assert show(s3_store_uri, run["id"])["outputs"] == run["outputs"]


def test_bad_input(local_store_uri, tmp_path):
    store = ("--store", local_store_uri)
    one_line_error(run_artfs("run", *store, check=False), "needs a command")
    one_line_error(run_artfs("run", *store, "--", check=False), "needs a command")
    one_line_error(run_artfs("run", *store, "--config", "novalue", "--", "true", check=False), "key=value")
    one_line_error(run_artfs("run", *store, "--config", "a=1", "--config", "a=2", "--", "true", check=False),
                   "given twice")
    one_line_error(run_artfs("run", *store, "--config-file", str(tmp_path / "missing.json"), "--", "true",
                             check=False), "cannot read --config-file")
    (tmp_path / "bad.json").write_text("{not json")
    one_line_error(run_artfs("run", *store, "--config-file", str(tmp_path / "bad.json"), "--", "true",
                             check=False), "not valid JSON")
    (tmp_path / "list.json").write_text("[1, 2]")
    one_line_error(run_artfs("run", *store, "--config-file", str(tmp_path / "list.json"), "--", "true",
                             check=False), "JSON object")
    one_line_error(run_artfs("run", *store, "--job-type", "a b", "--", "true", check=False), "job type")
    run_artfs("run", *store, "--", "true")
    one_line_error(run_artfs("runs", "show", "20261201-025424.123-3fa9c1b2", *store, check=False),
                   "does not exist")
    one_line_error(run_artfs("runs", "show", "../nope", *store, check=False), "invalid run id")
    write_tree(tmp_path / "d", {"x": b"x"})
    one_line_error(run_artfs("put", str(tmp_path / "d"), "x", *store, env={"ARTFS_RUN_ID": "garbage"},
                             check=False), "ARTFS_RUN_ID")
    assert len(runs_json(local_store_uri)) == 1  # no bad input left a run behind
