"""Errors a user sees. Every message is one line that says what went wrong and, where it helps, what to do.

The CLI prints `artfs: <message>` and exits non-zero for any ArtfsError; anything else is a bug.
"""


class ArtfsError(Exception):
    """Base of every expected failure (bad input, missing things, an unreachable store)."""


class InvalidName(ArtfsError):
    """A name, alias, ref or path breaks the naming rules."""


class NotFound(ArtfsError):
    """An artifact, version, alias or path does not exist."""


class StoreError(ArtfsError):
    """The store failed (permanently, or after retries)."""


class StoreNotFound(StoreError, NotFound):
    """A key does not exist in the store."""


class StoreUnavailable(StoreError):
    """The store cannot be reached, or refuses our credentials."""


class TransientStoreError(StoreError):
    """A failure worth retrying: throttling, 5xx, a dropped connection."""


class IntegrityError(ArtfsError):
    """Data read back does not match its digest, or a record breaks the rules: never served as data."""


class Conflict(ArtfsError):
    """A concurrent change collides with ours (for example, the same path changed on both sides)."""
