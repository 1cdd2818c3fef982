"""The S3 store's botocore data loader (storage/s3.py): a trimmed endpoint table kept in a scratch dir must
resolve exactly as botocore's own, and any trouble with the copy falls back to the stock table."""

from __future__ import annotations

import json
import os

import pytest

from artfs.storage.s3 import SESSION_SERVICES, _session, _trimmed_endpoints

REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-2", "cn-north-1", "us-gov-west-1")


@pytest.fixture
def aws_env(monkeypatch):
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")


@pytest.mark.parametrize("region", REGIONS)
def test_clients_resolve_as_with_the_stock_table(tmp_path, aws_env, region):
    for service in ("s3", "sts"):
        stock = _session().create_client(service, region_name=region)
        trimmed = _session(str(tmp_path)).create_client(service, region_name=region)
        assert trimmed.meta.endpoint_url == stock.meta.endpoint_url
        assert trimmed.meta.partition == stock.meta.partition
        assert trimmed.meta.region_name == stock.meta.region_name
    assert len(os.listdir(tmp_path)) == 1  # one copy, made once, reused


def test_the_copy_keeps_only_the_sessions_services_whole(tmp_path):
    loader = _session().get_component("data_loader")
    stock = loader.load_data("endpoints")
    data, source = _trimmed_endpoints(loader.search_paths, str(tmp_path))
    assert source.endswith("endpoints.json")
    for mine, theirs in zip(data["partitions"], stock["partitions"], strict=True):
        assert set(mine["services"]) == {s for s in theirs["services"] if s in SESSION_SERVICES}
        assert {k: v for k, v in mine.items() if k != "services"} == \
            {k: v for k, v in theirs.items() if k != "services"}
        for name, entry in mine["services"].items():
            assert entry == theirs["services"][name]
    (copy,) = os.listdir(tmp_path)
    assert os.path.getsize(tmp_path / copy) < os.path.getsize(source) / 20


@pytest.mark.parametrize("garbage", [b"", b"{not json", b'{"partitions": 7}', b"[]"])
def test_a_damaged_copy_is_made_again(tmp_path, garbage):
    loader = _session().get_component("data_loader")
    first, _ = _trimmed_endpoints(loader.search_paths, str(tmp_path))
    (copy,) = os.listdir(tmp_path)
    (tmp_path / copy).write_bytes(garbage)
    again, _ = _trimmed_endpoints(loader.search_paths, str(tmp_path))
    assert again == first
    assert json.loads((tmp_path / copy).read_bytes()) == first


def test_an_unwritable_scratch_dir_falls_back_to_the_stock_table(tmp_path, aws_env):
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    loader = _session().get_component("data_loader")
    assert _trimmed_endpoints(loader.search_paths, str(blocked / "sub")) is None
    client = _session(str(blocked / "sub")).create_client("s3", region_name="eu-west-1")
    assert client.meta.endpoint_url == "https://s3.eu-west-1.amazonaws.com"
