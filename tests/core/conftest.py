import pytest

from artfs.core.places import Places
from artfs.core.repo import Repo
from artfs.core.staging import area as area_module
from artfs.storage.open import open_store
from tests.support.repos import fresh_repo


@pytest.fixture
def repo(store_uri, tmp_path):
    r = fresh_repo(store_uri, tmp_path / "cache")
    yield r
    r.close()


@pytest.fixture
def lrepo(tmp_path):
    """A repo on a local store (tests that do not need to run on S3 too)."""
    r = Repo(open_store(str(tmp_path / "store")), Places.under(str(tmp_path / "cache")))
    yield r
    r.close()


@pytest.fixture
def patient_quick(monkeypatch):
    """A loaded test machine may make any call slow: only the test of the quick path's backoff should see
    it (core/staging/area.py, QUICK_SLOW)."""
    monkeypatch.setattr(area_module, "QUICK_SLOW", 60.0)
