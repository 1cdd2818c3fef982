"""`artfs run` (run a command as a recorded run) and `artfs runs` / `artfs runs show` (look at runs).

`artfs run` is the root of its run's process tree: it records the start, makes itself a child subreaper
(so processes that daemonize stay its descendants, and a mount attributes their opens to the run),
registers itself in the machine's run registry (core/run_registry.py), runs CMD with $ARTFS_RUN_ID set,
heartbeats from a thread, forwards SIGINT/SIGTERM/SIGHUP sent to it, reaps every descendant that is
reparented to it, records the end and exits with CMD's status. Inside a run, `artfs run` joins it: it
execs CMD in place (its processes are the run's already), recording no second run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

import click

from artfs.cli.common import (
    endpoint_option,
    examples,
    human,
    json_option,
    open_repo,
    print_json,
    settings,
    shown,
    store_option,
    table,
    when,
)
from artfs.errors import ArtfsError

_PR_SET_CHILD_SUBREAPER = 36
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_SI_USER, _SI_QUEUE, _SI_TKILL = 0, -1, -6  # sent by a process (kill, sigqueue, tgkill), not the kernel/tty


def parse_config(pairs: tuple[str, ...], config_file: str | None) -> dict[str, Any]:
    """--config-file (a JSON object), then each --config k=v over it. A value that parses as JSON is kept
    typed (`lr=0.01` is a number, `aug=true` a bool); anything else is a string."""
    config: dict[str, Any] = {}
    if config_file is not None:
        try:
            with open(config_file, encoding="utf-8") as f:
                loaded = json.load(f)
        except OSError as e:
            raise ArtfsError(f"cannot read --config-file {config_file}: {e.strerror or e}") from None
        except (ValueError, UnicodeDecodeError) as e:
            raise ArtfsError(f"--config-file {config_file} is not valid JSON: {e}") from None
        if not isinstance(loaded, dict):
            raise ArtfsError(f"--config-file {config_file} must hold a JSON object ({{\"key\": value, …}})")
        config.update(loaded)
    seen: set[str] = set()
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ArtfsError(f"invalid --config {pair!r}: use key=value")
        if key in seen:
            raise ArtfsError(f"--config key {key!r} given twice")
        seen.add(key)
        try:
            config[key] = json.loads(value)
        except ValueError:
            config[key] = value
    return config


def _subreaper() -> None:
    """Become a child subreaper: orphans of CMD's tree are reparented to us, not to init, so they stay in
    the run's process tree (and we reap them). Best effort: without it only daemonizing processes escape."""
    import ctypes  # here, not at the top: every other command starts without it

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


@contextlib.contextmanager
def _registered(run_id: str, store_uri: str) -> Iterator[None]:
    """This process as the run's root in the machine's registry, so mount daemons attribute opens to it."""
    try:
        from artfs.core.run_registry import register
    except ImportError:  # the registry is not in this build: nothing attributes opens, the run still records
        yield
        return
    with register(settings().places, run_id, store_uri):
        yield


class _Heartbeat:
    """A thread that says the run is alive every `interval` seconds until stopped. A failing store does not
    stop CMD: the failure is said once on stderr (a run that cannot heartbeat may later show as crashed)."""

    def __init__(self, repo, run_id: str, interval: float) -> None:
        self._repo, self._run_id, self._interval = repo, run_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="artfs-heartbeat", daemon=True)

    def _loop(self) -> None:
        from artfs.core.runs import heartbeat

        failing = False
        while not self._stop.wait(self._interval):
            try:
                heartbeat(self._repo, self._run_id)
                failing = False
            except Exception as e:  # noqa: BLE001 - any failure: say it, keep CMD running
                if not failing:
                    click.echo(f"artfs: heartbeat of run {self._run_id} failed: {e}", err=True)
                failing = True

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _status_code(status: int) -> int:
    """A wait status as a shell reports it: the exit code, or 128+signal."""
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


_WATCHED = frozenset({*_FORWARDED, signal.SIGCHLD})


@contextlib.contextmanager
def _signals_blocked() -> Iterator[None]:
    """Block the signals _supervise takes with sigtimedwait. Entered before any thread starts (threads
    inherit the mask), so no other thread is handed one of them."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _WATCHED)
    try:
        yield
    finally:
        while signal.sigtimedwait(_WATCHED, 0) is not None:  # taken while CMD ended: CMD had them
            pass
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _supervise(command: list[str], env: dict[str, str]) -> int:
    """Spawn CMD and wait for it, forwarding the signals a process sends us and reaping every orphan that
    is reparented to us; then reap what has already exited (daemons left running are not waited for).
    Call with _signals_blocked.

    Signals are taken with sigtimedwait, which says who sent them: one from the kernel (the terminal's
    Ctrl-C, a hangup) already reached CMD in our foreground process group, so only those sent by a process
    (`kill`) are forwarded. CMD starts with an empty mask and default dispositions."""
    try:
        pid = os.posix_spawnp(
            command[0], command, env, setsigmask=(),
            setsigdef=(*_FORWARDED, signal.SIGCHLD, signal.SIGPIPE, signal.SIGXFSZ, signal.SIGQUIT),
        )
    except FileNotFoundError:
        raise _SpawnFailed(127, f"{command[0]}: command not found") from None
    except OSError as e:
        raise _SpawnFailed(126, f"{command[0]}: {e.strerror or e}") from None
    code: int | None = None
    while code is None:
        info = signal.sigtimedwait(_WATCHED, 1.0)
        if info is not None and info.si_signo != signal.SIGCHLD:
            if info.si_code in (_SI_USER, _SI_QUEUE, _SI_TKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, info.si_signo)
            continue
        code = _reap(pid)  # on SIGCHLD, and every second in case one was merged or missed
    _reap(None)
    return code


class _SpawnFailed(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _reap(main: int | None) -> int | None:
    """Reap every child that has exited; CMD's (`main`) exit code when it is among them."""
    code = None
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return code
        if pid == 0:
            return code
        if pid == main:
            code = _status_code(status)


def _join(command: list[str], ignored: list[str]) -> None:
    """Inside a run already: become CMD (same process, same run) instead of starting a second run."""
    run_id = settings().run_id
    if ignored:
        click.echo(f"artfs: inside run {run_id}: CMD joins it; {', '.join(ignored)} ignored", err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp(command[0], command)
    except FileNotFoundError:
        click.echo(f"artfs: {command[0]}: command not found", err=True)
        sys.exit(127)
    except OSError as e:
        click.echo(f"artfs: {command[0]}: {e.strerror or e}", err=True)
        sys.exit(126)


@click.command(
    name="run",
    context_settings={"allow_interspersed_args": False},
    epilog=examples(
        "artfs run --job-type preprocess -- python clean.py",
        "artfs run --name train-1 --config lr=0.01 --config epochs=10 -- python train.py",
        "artfs run --config-file params.json -- ./train.sh",
    ),
)
@click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="-- CMD [ARGS]...")
@click.option("--name", default=None, help="The run's name (default: its id).")
@click.option("--job-type", default=None, metavar="T", help="What kind of job: train, preprocess, … (default run).")
@click.option("--config", "config_pairs", multiple=True, metavar="K=V",
              help="A config value (repeatable); a value that parses as JSON is kept typed.")
@click.option("--config-file", default=None, metavar="F", help="Config from a JSON object file (--config wins).")
@store_option
@endpoint_option
def run_command(command, name, job_type, config_pairs, config_file, store_uri, endpoint_url) -> None:
    """Run CMD as a recorded run: its start, end, exit status, and every version it reads through a mount
    of the store (its inputs) or makes with `artfs put` / a seal (its outputs).

    Exits with CMD's status (128+N when a signal N killed it)."""
    from artfs.core.names import check_name
    from artfs.core.runs import DEFAULT_HEARTBEAT, RUN_ENV, end_run, start_run

    command = list(command)
    if not command:
        raise ArtfsError("artfs run needs a command: artfs run [OPTIONS] -- CMD [ARGS]...")
    config = parse_config(config_pairs, config_file)
    if job_type is not None:
        check_name(job_type, "job type")
    conf = settings()
    if conf.run_id is not None:
        given = [opt for opt, value in (("--name", name), ("--job-type", job_type), ("--config", config_pairs),
                                        ("--config-file", config_file), ("--store", store_uri)) if value]
        _join(command, given)
        return
    repo = open_repo(store_uri, endpoint_url, create=True)
    try:
        interval = conf.run_heartbeat or DEFAULT_HEARTBEAT
        rec = start_run(repo, name=name, job_type=job_type, config=config, command=command, cwd=os.getcwd(),
                        heartbeat=interval)
        click.echo(f"artfs: run {rec.id}" + (f" ({shown(rec.name)})" if name else "") + " started", err=True)
        env = dict(os.environ, **{RUN_ENV: rec.id, "ARTFS_STORE": repo.store.uri})
        if endpoint_url:
            env["AWS_ENDPOINT_URL"] = endpoint_url
        _subreaper()
        with _signals_blocked():  # until the end is recorded: a late Ctrl-C must not lose it
            try:
                with _registered(rec.id, repo.store.uri), _Heartbeat(repo, rec.id, interval):
                    code = _supervise(command, env)
            except _SpawnFailed as e:
                click.echo(f"artfs: {e}", err=True)
                code = e.code
            except BaseException:  # the registry or the store failed us: say the run failed, not crashed
                with contextlib.suppress(ArtfsError):
                    end_run(repo, rec.id, "failed")
                raise
            try:
                end_run(repo, rec.id, "finished" if code == 0 else "failed", None if code == 0 else code)
            except ArtfsError as e:
                click.echo(f"artfs: could not record the end of run {rec.id}: {e}", err=True)
        click.echo(f"artfs: run {rec.id} {'finished' if code == 0 else f'failed (exit {code})'}", err=True)
    finally:
        repo.close()
    sys.exit(code)


# --- looking at runs ---------------------------------------------------------------------------------


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _status(info) -> str:
    return f"failed ({info.exit_code})" if info.status == "failed" and info.exit_code is not None else info.status


def _refs(refs: list[str]) -> str:
    return ", ".join(refs) if refs else "-"


@click.group(name="runs", invoke_without_command=True, epilog=examples(
    "artfs runs", "artfs runs --limit 100 --json", "artfs runs show 20261201-025424.123-3fa9c1b2",
))
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=0), metavar="N",
              help="How many runs, newest first (0: all).")
@store_option
@endpoint_option
@json_option
@click.pass_context
def runs_group(ctx: click.Context, limit, store_uri, endpoint_url, as_json) -> None:
    """The runs recorded in the store, newest first: status, duration, inputs and outputs."""
    if ctx.invoked_subcommand is not None:
        return
    from artfs.core.runs import list_runs

    repo = open_repo(store_uri, endpoint_url)
    try:
        infos = list_runs(repo, limit or None)
    finally:
        repo.close()
    if as_json:
        print_json([i.as_json() for i in infos])
        return
    rows = [[i.id, shown(i.record.name), i.record.job_type, _status(i), when(i.record.started),
             _duration(i.duration), _refs([x.ref for x in i.inputs]), _refs([f"{a}:v{v}" for a, v in i.outputs])]
            for i in infos]
    if not rows:
        click.echo("no runs")
        return
    table(rows, ["ID", "NAME", "TYPE", "STATUS", "STARTED", "DURATION", "INPUTS", "OUTPUTS"])


@runs_group.command(name="show")
@click.argument("run_id", metavar="ID")
@store_option
@endpoint_option
@json_option
@click.pass_context
def show(ctx: click.Context, run_id, store_uri, endpoint_url, as_json) -> None:
    """Everything about run ID: its command, config, status, and inputs (how, files, bytes) and outputs."""
    from artfs.core.runs import run_info

    parent = ctx.parent.params if ctx.parent is not None else {}
    as_json = as_json or parent.get("as_json", False)
    repo = open_repo(store_uri or parent.get("store_uri"), endpoint_url or parent.get("endpoint_url"))
    try:
        info = run_info(repo, run_id)
    finally:
        repo.close()
    if as_json:
        print_json(info.as_json())
        return
    rec = info.record
    lines = [
        ("run", rec.id), ("name", shown(rec.name)), ("job type", rec.job_type), ("status", _status(info)),
        ("started", when(rec.started)), ("ended", when(info.ended) if info.ended is not None else "-"),
        ("duration", _duration(info.duration)),
        ("last heartbeat", when(info.last_heartbeat) if info.last_heartbeat is not None else "-"),
        ("command", shown(shlex.join(rec.command))), ("cwd", shown(rec.cwd)), ("git commit", rec.git_commit or "-"),
        ("by", f"{shown(rec.creator)} (pid {rec.pid} on {shown(rec.host)})"),
    ]
    for label, value in lines:
        click.echo(f"{label + ':':<16}{value}")
    click.echo(f"{'config:':<16}" + ("" if rec.config else "-"))
    for key, value in sorted(rec.config.items()):
        click.echo(f"  {shown(key)} = {json.dumps(value)}")
    click.echo(f"{'inputs:':<16}" + (str(len(info.inputs)) if info.inputs else "-"))
    for i in info.inputs:
        click.echo(f"  {i.ref}  {i.how}  {i.files} files, {human(i.bytes)}  digest {i.digest}  via {i.source}")
    click.echo(f"{'outputs:':<16}" + (str(len(info.outputs)) if info.outputs else "-"))
    for a, v in info.outputs:
        click.echo(f"  {a}:v{v}")


COMMANDS = [run_command, runs_group]
