import artfs.api as api
from tests.core.test_commit import tree_of, write_tree


def test_api_put_get_alias(tmp_path, local_store_uri):
    src = tmp_path / "src"
    write_tree(src, {"w.bin": b"weights", "cfg/a.json": b"{}"})
    res = api.put(str(src), "resnet", type="model", message="m", aliases=["candidate"], store=local_store_uri)
    assert res.ref == "resnet:v0"
    assert api.resolve("resnet:candidate", store=local_store_uri).type == "model"
    api.set_alias("resnet:v0", "best", store=local_store_uri)
    out = api.get("resnet:best", str(tmp_path / "out"), store=local_store_uri)
    assert out.files == 2 and tree_of(str(src)) == tree_of(str(tmp_path / "out"))
    assert [v.version for v in api.versions("resnet", store=local_store_uri)] == [0]
