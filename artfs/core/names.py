"""Names, aliases, refs and in-version paths: every validation rule in one place.

Rules are enforced both on user input and on records read back from a store, because a bucket may be
written by someone else: a manifest with `../etc/passwd` in it must never reach a filesystem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from artfs.errors import InvalidName

_NAME_RE = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,127}$")
_VERSION_RE = re.compile(r"^v(0|[1-9][0-9]{0,9})$")
RESERVED = frozenset({"latest", "staging"})
MAX_PATH_BYTES = 4096
MAX_COMPONENT_BYTES = 255


def check_name(name: str, what: str = "artifact name") -> str:
    """An artifact name: 1-128 of letters, digits, '-', '_', '.', not starting with '.'."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InvalidName(
            f"invalid {what} {name!r}: use 1-128 letters, digits, '-', '_', '.', not starting with '.'"
        )
    return name


_LOOKS_LIKE_A_VERSION = re.compile(r"^[vV]?-?[0-9]*$")


def check_alias(alias: str, new: bool = True) -> str:
    """An alias follows the name rules, is not `latest`/`staging`, and does not look like a version.

    A `new` alias (one being set) must also not start with '-' or look like a version in any spelling
    (`V3`, `v`, `v-1`, `-1`, `7`): such names read as refs or options. Alias records already in a store
    are read with `new=False`, so a store written under the older rule keeps loading."""
    check_name(alias, "alias")
    if alias in RESERVED:
        raise InvalidName(f"invalid alias {alias!r}: {alias!r} is reserved")
    if _VERSION_RE.match(alias) or re.match(r"^v[0-9]+$", alias) or (new and _LOOKS_LIKE_A_VERSION.match(alias)):
        raise InvalidName(f"invalid alias {alias!r}: an alias may not look like a version")
    if new and alias.startswith("-"):
        raise InvalidName(f"invalid alias {alias!r}: an alias may not start with '-'")
    return alias


def parse_version(text: str) -> int | None:
    """`v3` → 3; anything else → None."""
    m = _VERSION_RE.match(text)
    return int(m.group(1)) if m else None


def version_label(number: int) -> str:
    return f"v{number}"


@dataclass(frozen=True)
class Ref:
    """`name[:ref]`: ref is `vN`, `latest`, or an alias; None means latest."""

    name: str
    ref: str | None = None

    def __str__(self) -> str:
        return f"{self.name}:{self.ref}" if self.ref else self.name


def parse_ref(text: str) -> Ref:
    """Parse `animals`, `animals:v2`, `animals:latest`, `animals:best`."""
    name, sep, ref = text.partition(":")
    check_name(name)
    if not sep:
        return Ref(name, None)
    if ref == "latest" or parse_version(ref) is not None:
        return Ref(name, ref)
    if not ref:
        raise InvalidName(f"invalid ref {text!r}: nothing after ':' (use NAME:vN, NAME:latest or NAME:ALIAS)")
    check_name(ref, "alias")
    return Ref(name, ref)


_BAD_PATH = re.compile(r"(?:^|/)\.{0,2}(?:/|$)|\x00")


def check_path(path: str) -> str:
    """A relative, normalized path inside a version: no '..', '.', empty or NUL components, no leading '/'."""
    # The common case, decided by one regex (manifests hold millions of paths).
    if isinstance(path, str) and path and len(path) <= MAX_COMPONENT_BYTES and path.isascii() \
            and not _BAD_PATH.search(path):
        return path
    if not isinstance(path, str) or not path:
        raise InvalidName("invalid path: empty")
    if "\x00" in path:
        raise InvalidName(f"invalid path {path!r}: contains NUL")
    if path.startswith("/"):
        raise InvalidName(f"invalid path {path!r}: must be relative")
    try:
        encoded = path.encode("utf-8")
    except UnicodeError:
        raise InvalidName(f"invalid path {path!r}: not valid UTF-8 (versions store UTF-8 names)") from None
    if len(encoded) > MAX_PATH_BYTES:
        raise InvalidName(f"invalid path {path[:60]!r}…: longer than {MAX_PATH_BYTES} bytes")
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise InvalidName(f"invalid path {path!r}: empty, '.' or '..' component")
        if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
            raise InvalidName(f"invalid path {path!r}: a component is longer than {MAX_COMPONENT_BYTES} bytes")
    return path


def check_symlink_target(path: str, target: str) -> str:
    """A symlink stored in a version is relative and stays inside the version's tree."""
    if not target or "\x00" in target or target.startswith("/"):
        raise InvalidName(f"invalid symlink {path!r} -> {target!r}: must be relative and inside the tree")
    try:
        target.encode("utf-8")
    except UnicodeError:
        raise InvalidName(f"invalid symlink {path!r} -> {target!r}: not valid UTF-8") from None
    depth = len(path.split("/")) - 1
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                raise InvalidName(f"invalid symlink {path!r} -> {target!r}: escapes the version's tree")
        elif part not in ("", "."):
            depth += 1
    return target


def check_text(text: str, what: str) -> str:
    """Free text stored in a record (a message, metadata): valid UTF-8, checked before any work starts."""
    try:
        text.encode("utf-8")
    except UnicodeError:
        raise InvalidName(f"{what} is not valid UTF-8 text: {text.encode('utf-8', 'replace')!r}") from None
    return text


def check_message(message: str, metadata: dict[str, str] | None) -> None:
    """A version's message and metadata: UTF-8 text (they go into a JSON record), checked up front."""
    check_text(message, "the message")
    for key, value in (metadata or {}).items():
        check_text(key, "a metadata key")
        check_text(value, f"metadata {key!r}")


def parse_meta(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """`k=v` strings → dict; a pair without '=', a key given twice or text that is not UTF-8 is an error."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidName(f"invalid metadata {pair!r}: use key=value")
        check_text(key, "a metadata key")
        check_text(value, f"metadata {key!r}")
        if key in out:
            raise InvalidName(f"metadata key {key!r} given twice")
        out[key] = value
    return out
