"""`artfs mount` and `artfs unmount`: parse, then hand over to artfs.fs.

artfs.fs (pyfuse3, trio) is imported inside the commands, never at the top: the other commands, which
load this module too, start without it.
"""

from __future__ import annotations

import dataclasses
import os
import re

import click

from artfs.cli.common import cache_dir_option, cache_size_option, endpoint_option, examples, settings, store_option
from artfs.errors import ArtfsError

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?")


def parse_duration(text: str) -> float:
    """Seconds in "10s", "500ms", "2m", "1h" or "10"; "0" or "off" disables."""
    text = text.strip().lower()
    if text in ("off", "never", "no"):
        return 0.0
    match = _DURATION.fullmatch(text)
    if not match:
        raise ArtfsError(f"invalid duration {text!r}: use a number of seconds or one like 500ms, 10s, 2m")
    number, unit = match.groups()
    return float(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[unit]


MOUNT_OPTIONS = ("allow_other", "no_writeback_cache")


def _mount_options(values: tuple[str, ...]) -> set[str]:
    options = {o.strip() for v in values for o in v.split(",") if o.strip()}
    unknown = options - set(MOUNT_OPTIONS)
    if unknown:
        raise ArtfsError(f"unsupported mount option(s) {', '.join(sorted(unknown))} "
                         f"(supported: {', '.join(MOUNT_OPTIONS)})")
    return options


@click.command(epilog=examples(
    'artfs mount ~/art --daemon',
    'ls ~/art/animals                 # v0 v1 latest best staging',
    'cp new.png ~/art/animals/staging/images/ && artfs seal ~/art/animals/staging',
    'artfs mount ~/art --store s3://bucket/prefix --poll 30s --daemon',
))
@click.argument("mountpoint")
@store_option
@endpoint_option
@cache_dir_option
@cache_size_option
@click.option("--poll", default="10s", show_default=True, metavar="DURATION",
              help="How often to look for new versions and alias moves (0 disables).")
@click.option("-o", "options", multiple=True, metavar="OPTIONS",
              help="Mount options: allow_other, no_writeback_cache (staging writes go to the daemon one by "
                   "one, each durable when write() returns).")
@click.option("-d", "--daemon", is_flag=True, help="Run in the background; return once the mount is ready.")
@click.option("--force", is_flag=True, help="Clean up a stale mount left at MOUNTPOINT by a dead daemon.")
@click.option("--log", "log_path", default=None, metavar="FILE",
              help="Log file (default: ~/.local/state/artfs/logs/mount-NAME-HASH.log).")
@click.option("--ready-fd", type=int, default=None, hidden=True)
def mount(mountpoint, store_uri, endpoint_url, cache_dir, cache_size, poll, options, daemon, force, log_path,
          ready_fd) -> None:
    """Mount the store's artifacts at MOUNTPOINT: one directory per artifact, one per version, read lazily.

    NAME/staging in the mount is writable: a copy-on-write view of latest that takes any tool; `artfs seal
    MOUNTPOINT/NAME/staging` publishes it as the next version (`artfs status`, `artfs discard` too), and
    `mkdir MOUNTPOINT/NAME` starts a new artifact."""
    import logging

    from artfs.fs import mount as fsmount
    from artfs.settings import parse_size

    log = logging.getLogger(__name__)

    mountpoint = os.path.abspath(mountpoint)
    opts = _mount_options(options)
    env = settings()
    if cache_dir:
        env = dataclasses.replace(env, places=dataclasses.replace(env.places, cache=os.path.abspath(cache_dir)))
    config = fsmount.MountConfig(
        mountpoint=mountpoint,
        settings=env,
        store_uri=_absolute_store(store_uri or env.store_uri),
        endpoint_url=endpoint_url,
        cache_size=parse_size(cache_size) if cache_size else env.cache_size,
        poll=parse_duration(poll),
        allow_other="allow_other" in opts,
        writeback_cache="no_writeback_cache" not in opts,
        force=force,
    )
    log_path = os.path.abspath(log_path or env.places.mount_log(mountpoint))
    if daemon:
        from artfs.fs import mountpoint as mp

        mp.prepare(mountpoint, force)  # fail here, with the message on this terminal, when we can
        args = [mountpoint, "--poll", poll]
        for flag, value in (("--store", config.store_uri), ("--endpoint-url", endpoint_url),
                            ("--cache-dir", env.places.cache if cache_dir else None), ("--cache-size", cache_size)):
            if value:
                args += [flag, value]
        args += [f"-o{o}" for o in sorted(opts)]
        if force:
            args.append("--force")
        pid = fsmount.spawn(args, log_path)
        click.echo(f"mounted {config.store_uri} at {mountpoint} (pid {pid})")
        click.echo(f"log: {log_path}")
        return
    fsmount.setup_logging(log_path, to_stderr=ready_fd is None, level=env.log_level)
    if ready_fd is None:
        fsmount.serve(config)
        return
    reported = False

    def ready() -> None:
        nonlocal reported
        reported = True
        try:
            os.write(ready_fd, b"ready\n")
            os.close(ready_fd)
        except OSError:  # the `artfs mount --daemon` that waits for us is gone: keep serving anyway
            pass

    try:
        fsmount.serve(config, ready)
    except ArtfsError as e:
        log.error("%s", e)
        if not reported:
            os.write(ready_fd, f"error {e}\n".encode())
        raise
    except BaseException:
        log.exception("the mount daemon failed")
        raise


def _absolute_store(uri: str) -> str:
    """A plain-path store made absolute, because the daemon runs from /."""
    if "://" in uri:
        return uri
    return os.path.abspath(os.path.expanduser(uri))


@click.command(epilog=examples('artfs unmount ~/art'))
@click.argument("mountpoint")
@click.option("-z", "--lazy", is_flag=True, help="Detach now even if busy; the mount goes away when unused.")
def unmount(mountpoint, lazy) -> None:
    """Unmount an artfs mount (also a stale one) and wait for its daemon to finish."""
    from artfs.fs import mountpoint as mp

    mp.unmount(mountpoint, lazy=lazy)


COMMANDS = [mount, unmount]
