import pytest

from tests.support.repos import fresh_repo


@pytest.fixture
def repo(store_uri, tmp_path):
    r = fresh_repo(store_uri, tmp_path / "cache")
    yield r
    r.close()
