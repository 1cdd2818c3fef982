import artfs.api as api
from tests.support.trees import snapshot, write_tree


def test_api_put_get_alias(tmp_path, local_store_uri):
    src = tmp_path / "src"
    write_tree(src, {"w.bin": b"weights", "cfg/a.json": b"{}"})
    res = api.put(str(src), "resnet", type="model", message="m", aliases=["candidate"], store=local_store_uri)
    assert res.ref == "resnet:v0"
    assert api.resolve("resnet:candidate", store=local_store_uri).type == "model"
    api.set_alias("resnet:v0", "best", store=local_store_uri)
    out = api.get("resnet:best", str(tmp_path / "out"), store=local_store_uri)
    assert out.files == 2 and snapshot(str(src), mtimes=True) == snapshot(str(tmp_path / "out"), mtimes=True)
    assert [v.version for v in api.versions("resnet", store=local_store_uri)] == [0]
