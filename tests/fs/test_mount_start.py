"""What the daemon sets up for itself before it serves (fs/mount.py)."""

from __future__ import annotations

import subprocess
import sys

_PROBE = """
import resource
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, ({low}, hard))
from artfs.fs.mount import OPEN_FILES, _raise_open_files_limit
_raise_open_files_limit()
now = resource.getrlimit(resource.RLIMIT_NOFILE)
print(now[0], now[1], min(OPEN_FILES, hard) if hard != resource.RLIM_INFINITY else OPEN_FILES)
"""


def test_the_open_files_limit_is_raised_toward_the_hard_limit_never_lowered():
    for low in (64, 1024):
        out = subprocess.run([sys.executable, "-c", _PROBE.format(low=low)], capture_output=True, text=True,
                             check=True).stdout.split()
        soft, hard, target = map(int, out)
        assert soft == max(low, target) and soft <= hard
    # a soft limit already above the target stays where it is
    out = subprocess.run([sys.executable, "-c", _PROBE.format(low="hard").replace(
        "_raise_open_files_limit()", "_raise_open_files_limit(16)")], capture_output=True, text=True,
        check=True).stdout.split()
    assert int(out[0]) == int(out[1])
