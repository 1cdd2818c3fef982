import pytest

from artfs.core.names import (
    Ref,
    check_alias,
    check_name,
    check_path,
    check_symlink_target,
    parse_meta,
    parse_ref,
    parse_version,
)
from artfs.errors import InvalidName


@pytest.mark.parametrize("name", ["animals", "a", "A-b_c.d", "x" * 128, "0day", "-dash"])
def test_good_names(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", ".hidden", "x" * 129, "a/b", "a:b", "a b", "ü", "a\x00"])
def test_bad_names(name):
    with pytest.raises(InvalidName):
        check_name(name)


@pytest.mark.parametrize("alias", ["latest", "staging", "v3", "v0", "v007", ".x", "a/b"])
def test_bad_aliases(alias):
    with pytest.raises(InvalidName):
        check_alias(alias)


def test_good_alias():
    assert check_alias("best") == "best"
    assert check_alias("version-3") == "version-3"


def test_parse_ref():
    assert parse_ref("animals") == Ref("animals", None)
    assert parse_ref("animals:v2") == Ref("animals", "v2")
    assert parse_ref("animals:latest") == Ref("animals", "latest")
    assert parse_ref("animals:best") == Ref("animals", "best")
    for bad in ["animals:", ":v1", "animals:v1:x", "bad name:v1"]:
        with pytest.raises(InvalidName):
            parse_ref(bad)


def test_parse_version():
    assert parse_version("v0") == 0
    assert parse_version("v12") == 12
    assert parse_version("v012") is None
    assert parse_version("best") is None


@pytest.mark.parametrize("path", ["a", "a/b/c", "ünïcødé/文件", "a.b/.c", "x" * 255])
def test_good_paths(path):
    assert check_path(path) == path


@pytest.mark.parametrize("path", ["", "/abs", "a//b", "a/./b", "../x", "a/..", "a\x00b", "a/", "x" * 256])
def test_bad_paths(path):
    with pytest.raises(InvalidName):
        check_path(path)


def test_symlink_targets():
    assert check_symlink_target("a/b/link", "../c")
    assert check_symlink_target("link", "sub/file")
    for target in ["/etc/passwd", "../x", ""]:
        with pytest.raises(InvalidName):
            check_symlink_target("link", target)
    with pytest.raises(InvalidName):
        check_symlink_target("a/link", "../../x")


def test_parse_meta():
    assert parse_meta(["a=1", "b=x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    with pytest.raises(InvalidName):
        parse_meta(["novalue"])
