"""`artfs mount` / `artfs unmount` (placeholder until the mount lands; replaced by the fs work)."""

from __future__ import annotations

import click


def commands() -> list[click.Command]:
    return []
