"""The `artfs` command as a user runs it: output, --json, and the bad-input catalogue.

Every bad input gets one line on stderr, a non-zero exit, no traceback, and nothing half-written.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.support.s3server import s3_env
from tests.support.trees import snapshot, write_tree


def artfs(*args, env=None, check=True, cwd=None):
    full_env = {**os.environ, **(env or {})}
    p = subprocess.run([sys.executable, "-m", "artfs", *args], capture_output=True, text=True,
                       env=full_env, timeout=120, cwd=cwd)
    if check and p.returncode != 0:
        raise AssertionError(f"artfs {' '.join(args)} failed: {p.stderr}")
    return p


def fails(*args, match: str, env=None, cwd=None):
    p = artfs(*args, env=env, check=False, cwd=cwd)
    assert p.returncode != 0, p.stdout
    assert "Traceback" not in p.stderr, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert match in lines[0], lines[0]
    return p


@pytest.fixture
def store(store_uri):
    return store_uri


@pytest.fixture
def src(tmp_path):
    s = tmp_path / "src"
    write_tree(s, {"images/cat.png": os.urandom(5000), "labels.csv": b"cat,1\n"})
    return s


def test_put_get_ls_log_diff_info_files(store, src, tmp_path):
    out = json.loads(artfs("put", str(src), "animals", "--store", store, "-m", "one", "--meta", "a=1",
                           "--alias", "best", "--json").stdout)
    assert out["ref"] == "animals:v0" and out["version"] == 0 and out["files"] == 2
    assert out["bytes"] == 5006 and out["uploaded_bytes"] > 5000 and len(out["digest"]) == 32
    (src / "labels.csv").write_bytes(b"cat,1\ndog,2\n")
    p = artfs("put", str(src), "animals", "--store", store)
    assert p.stdout.splitlines()[0] == "animals:v1"
    p = artfs("put", str(src), "animals", "--store", store)
    assert "unchanged" in p.stdout
    assert json.loads(artfs("put", str(src), "animals", "--store", store, "--json").stdout)["unchanged"]

    arts = json.loads(artfs("ls", "--store", store, "--json").stdout)
    assert [(a["name"], a["type"], a["versions"]) for a in arts] == [("animals", "dataset", 2)]
    vers = json.loads(artfs("ls", "animals", "--store", store, "--json").stdout)
    assert [(v["ref"], v["aliases"]) for v in vers] == [("animals:v0", ["best"]), ("animals:v1", ["latest"])]
    assert "v1" in artfs("ls", "animals", "--store", store).stdout

    log = json.loads(artfs("log", "animals", "--store", store, "--json").stdout)
    assert [e["event"] for e in log][:1] != [] and {e.get("ref") for e in log} >= {"animals:v0", "animals:v1"}
    assert log[0]["time"] >= log[-1]["time"]

    d = json.loads(artfs("diff", "animals:v0", "animals:latest", "--store", store, "--json").stdout)
    assert d["modified"] == ["labels.csv"] and d["added"] == [] and d["removed"] == []
    assert "M labels.csv" in artfs("diff", "animals:v0", "animals:v1", "--store", store).stdout

    info = json.loads(artfs("info", "animals:best", "--store", store, "--json").stdout)
    assert info["version"] == 0 and info["metadata"] == {"a": "1"} and info["message"] == "one"
    files = json.loads(artfs("files", "animals", "--store", store, "--json").stdout)
    assert [f["path"] for f in files] == ["images", "images/cat.png", "labels.csv"]

    artfs("get", "animals:v1", str(tmp_path / "out"), "--store", store)
    assert snapshot(str(src), mtimes=True) == snapshot(str(tmp_path / "out"), mtimes=True)
    artfs("get", "animals:best", "--store", store, cwd=tmp_path)
    assert (tmp_path / "animals-v0" / "labels.csv").read_bytes() == b"cat,1\n"

    artfs("alias", "animals:v1", "best", "--store", store)
    assert json.loads(artfs("info", "animals:best", "--store", store, "--json").stdout)["version"] == 1
    artfs("alias", "--delete", "animals", "best", "--store", store)
    fails("get", "animals:best", str(tmp_path / "x"), "--store", store, match="no alias 'best'")


# --- the bad-input catalogue: one test each ---


def test_invalid_artifact_name(store, src):
    fails("put", str(src), ".hidden", "--store", store, match="invalid artifact name")


def test_invalid_alias(store, src):
    fails("put", str(src), "animals", "--alias", "v3", "--store", store, match="may not look like a version")
    fails("put", str(src), "animals", "--alias", "latest", "--store", store, match="reserved")
    res = artfs("ls", "--store", store, "--json", check=False)  # nothing half-written: not even the store
    assert (res.returncode == 0 and json.loads(res.stdout) == []) or "does not exist" in res.stderr


def test_invalid_meta(store, src):
    fails("put", str(src), "animals", "--meta", "novalue", "--store", store, match="key=value")


def test_put_missing_dir(store, tmp_path):
    fails("put", str(tmp_path / "nope"), "animals", "--store", store, match="not a directory")


def test_unknown_artifact(store):
    fails("get", "nothing", "--store", store, match="does not exist")
    fails("ls", "nothing", "--store", store, match="does not exist")
    fails("log", "nothing", "--store", store, match="does not exist")


def test_unknown_version_and_alias(store, src, tmp_path):
    artfs("put", str(src), "animals", "--store", store)
    fails("get", "animals:v9", str(tmp_path / "o"), "--store", store, match="v9 does not exist")
    fails("info", "animals:nope", "--store", store, match="no alias 'nope'")
    fails("alias", "animals:v4", "best", "--store", store, match="does not exist")
    fails("alias", "--delete", "animals", "best", "--store", store, match="no alias")


def test_dest_not_empty(store, src, tmp_path):
    artfs("put", str(src), "animals", "--store", store)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "mine.txt").write_text("keep")
    fails("get", "animals", str(dest), "--store", store, match="not empty")
    assert os.listdir(dest) == ["mine.txt"]
    assert not [p for p in os.listdir(tmp_path) if "partial" in p]


def test_unreachable_store(src, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y", "AWS_DEFAULT_REGION": "us-east-1",
           "ARTFS_STORE_DEADLINE": "2", "ARTFS_STORE_RETRIES": "2"}
    fails("ls", "--store", "s3://bucket/p", "--endpoint-url", f"http://127.0.0.1:{port}", env=env,
          match="unreachable")


def test_missing_credentials(src, tmp_path, s3_server):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent",
                "AWS_EC2_METADATA_DISABLED": "true", "AWS_DEFAULT_REGION": "us-east-1"})
    p = subprocess.run([sys.executable, "-m", "artfs", "ls", "--store", "s3://b/p", "--endpoint-url",
                        s3_server.endpoint], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert "credentials" in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_unsupported_store_uri(src):
    fails("put", str(src), "animals", "--store", "ftp://x/y", match="unsupported store URI")


def test_bad_ref_syntax(store):
    fails("get", "animals:", "--store", store, match="invalid ref")
    fails("diff", "animals:v0", "bad name", "--store", store, match="invalid artifact name")


def test_alias_delete_with_ref(store, src):
    artfs("put", str(src), "animals", "--store", store, "--alias", "best")
    fails("alias", "--delete", "animals:v0", "best", "--store", store, match="NAME, not NAME:REF")


def test_type_mismatch(store, src):
    artfs("put", str(src), "net", "--type", "model", "--store", store)
    (src / "labels.csv").write_text("changed")
    fails("put", str(src), "net", "--type", "dataset", "--store", store, match="is a model")


def test_usage_error_is_one_line_ish(store):
    p = artfs("frobnicate", check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr


def test_a_closed_pipe_is_not_an_error(tmp_path):
    """`artfs files NAME | head -1`: the reader has what it wanted; exit 0, no message."""
    src = tmp_path / "many"
    write_tree(src, {f"f{i:05d}.txt": b"x" for i in range(5000)})  # more lines than a pipe holds
    store = str(tmp_path / "store")
    artfs("put", str(src), "many", "--store", store)
    cmd = [sys.executable, "-c", "import sys; sys.argv[0] = 'artfs'; from artfs.cli import main; main()"]
    for args in (["files", "many"], ["ls", "many"]):
        proc = subprocess.Popen([*cmd, *args, "--store", store], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None
        proc.stdout.readline()
        proc.stdout.close()  # as `head -1` does
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0 and err == b"", (args, proc.returncode, err)


def test_log_shows_a_version_above_the_alias_set_with_it(tmp_path, src):
    store = str(tmp_path / "store")
    artfs("put", str(src), "animals", "--store", store)
    (src / "new.txt").write_text("new")
    artfs("put", str(src), "animals", "--store", store, "--alias", "best")
    lines = artfs("log", "animals", "--store", store).stdout.splitlines()
    assert "animals:v1" in lines[0] and "alias best -> animals:v1" in lines[1] and "animals:v0" in lines[2]


@pytest.mark.parametrize("alias", ["-1", "V3", "v", "v-1", "7"])
def test_aliases_that_read_as_refs_are_refused(tmp_path, src, alias):
    store = str(tmp_path / "store")
    artfs("put", str(src), "animals", "--store", store)
    fails("alias", "--store", store, "animals:v0", "--", alias, match="invalid alias")


def test_metadata_and_messages_are_checked_before_any_upload(tmp_path, src):
    store = str(tmp_path / "store")
    fails("put", str(src), "animals", "--store", store, "--meta", "k=1", "--meta", "k=2", match="given twice")
    p = subprocess.run([sys.executable, "-m", "artfs", "put", str(src), "animals", "--store", store,
                        "-m", b"caf\xe9".decode("utf-8", "surrogateescape")], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 1 and "not valid UTF-8" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert not os.path.exists(os.path.join(store, "packs")), "uploaded before the input was checked"


def test_ls_and_log_of_name_ref(tmp_path, src):
    store = str(tmp_path / "store")
    artfs("put", str(src), "animals", "--store", store)
    (src / "more.txt").write_text("more")
    artfs("put", str(src), "animals", "--store", store)
    listed = json.loads(artfs("ls", "animals:v0", "--store", store, "--json").stdout)
    assert [v["ref"] for v in listed] == ["animals:v0"]
    fails("ls", "animals:v9", "--store", store, match="v9")
    fails("log", "animals:v0", "--store", store, match="log shows a whole artifact")


def test_a_store_that_is_not_there_is_said_to_be(tmp_path, src, s3_server):
    missing = str(tmp_path / "no-such-store")
    for args in (("ls",), ("ls", "animals"), ("get", "animals", str(tmp_path / "out")), ("verify", "--all")):
        fails(*args, "--store", missing, match=f"store {missing} does not exist")
    artfs("put", str(src), "animals", "--store", missing)  # a put may create a new directory store
    artfs("ls", "--store", missing)
    fails("ls", "--store", "s3://no-such-bucket/p", "--endpoint-url", s3_server.endpoint,
          env=s3_env(s3_server.endpoint), match="bucket 'no-such-bucket' not found")


def test_a_silent_store_says_so_while_it_retries(tmp_path):
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # accepts, never answers
        env = {**s3_env(f"http://127.0.0.1:{silent.getsockname()[1]}"), "ARTFS_STORE_DEADLINE": "4"}
        p = artfs("ls", "--store", "s3://bucket/p", env=env, check=False)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert len(lines) == 2 and "still trying" in lines[0] and "unreachable" in lines[1], lines


def test_control_characters_in_names_stay_on_one_line(tmp_path):
    src = tmp_path / "odd"
    write_tree(src, {"two\nlines.txt": b"x", "tab\there.txt": b"y", "plain.txt": b"z"})
    store = str(tmp_path / "store")
    artfs("put", str(src), "odd", "--store", store, "-m", "line one\nline two")
    lines = artfs("files", "odd", "--store", store).stdout.splitlines()
    assert len(lines) == 3 and any("$'two\\nlines.txt'" in ln for ln in lines), lines
    assert any(ln.endswith("  plain.txt") for ln in lines)
    assert len(artfs("ls", "odd", "--store", store).stdout.splitlines()) == 2  # header + one version
    as_json = json.loads(artfs("files", "odd", "--store", store, "--json").stdout)
    assert "two\nlines.txt" in [f["path"] for f in as_json]


def test_json_errors_are_json(tmp_path):
    (tmp_path / "store").mkdir()
    p = artfs("info", "nosuch", "--store", str(tmp_path / "store"), "--json", check=False)
    assert p.returncode == 1 and p.stderr.strip().count("\n") == 0
    error = json.loads(p.stdout)
    assert "nosuch" in error["error"] and error["kind"]


def test_every_command_has_examples_and_mount_help_tells_of_staging():
    from artfs.cli import cli

    for name in cli.commands:
        assert "Examples:" in artfs(name, "--help").stdout, name
    text = artfs("mount", "--help").stdout
    assert "staging" in text and "seal" in text


def test_completion_scripts_and_artifact_names(tmp_path, src):
    for shell in ("bash", "zsh", "fish"):
        assert "_ARTFS_COMPLETE" in artfs("completion", shell).stdout
    store = str(tmp_path / "store")
    artfs("put", str(src), "animals", "--store", store, "--alias", "best")
    env = {"ARTFS_STORE": store, "COMP_WORDS": "artfs get ani", "COMP_CWORD": "2", "_ARTFS_COMPLETE": "bash_complete"}
    assert "plain,animals" in artfs(env=env).stdout.splitlines()
    env["COMP_WORDS"] = "artfs get animals:"
    assert {"plain,animals:v0", "plain,animals:latest", "plain,animals:best"} <= set(artfs(env=env).stdout.splitlines())
    (src / "more.txt").write_text("v1")
    artfs("put", str(src), "animals", "--store", store)
    artfs("put", str(src), "gone", "--store", store)
    artfs("rm", "animals:v1", "--store", store)
    artfs("rm", "gone", "--yes", "--store", store)
    offered = set(artfs(env=env).stdout.splitlines())  # deleted versions and artifacts are not offered
    assert "plain,animals:v0" in offered and "plain,animals:v1" not in offered
    env["COMP_WORDS"] = "artfs get "
    assert "plain,gone" not in artfs(env=env).stdout.splitlines()
