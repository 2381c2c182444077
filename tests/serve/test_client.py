"""The Python client against a running server: the same answers as the HTTP API, refusals as ClientError."""

from __future__ import annotations

import shutil

import httpx
import pytest

from pipeline.dedup.decisions import read_decisions
from pipeline.serve.client import Client, ClientError
from pipeline.serve.run import BackgroundServer
from tests.serve.conftest import serve_config


def test_search_by_path_bytes_key_and_id_round_trip(server, folder_root):
    url, _ = server
    client = Client(url)
    image = folder_root.parent / "photos" / "img05.jpg"
    by_path = client.search(image, k=4)
    assert [h["rank"] for h in by_path] == [1, 2, 3, 4] and by_path[0]["key"] == "img05.jpg"
    assert by_path == client.search(image.read_bytes(), k=4)
    assert by_path == httpx.post(f"{url}/api/search", params={"k": 4}, content=image.read_bytes(),
                                 headers={"content-type": "image/jpeg"}).json()["results"]
    assert client.search_key("img05.jpg", k=4) == client.search_id(by_path[0]["id"], k=4)
    assert client.search_key("img05.jpg", k=4)[0]["similarity"] == pytest.approx(1.0, abs=1e-5)
    assert len(client.search(image)) == 5  # the server's k
    assert client.thumbnail(by_path[0]["id"])[:3] == b"\xff\xd8\xff"
    assert client.health()["index"]["count"] == 14
    assert client.selection(source="seeds")["total"] == 3


@pytest.mark.parametrize("call, status, message", [
    (lambda c: c.search_key("nope.jpg"), 404, "no indexed image has this key"),
    (lambda c: c.search_id(10**6), 404, "not in the index"),
    (lambda c: c.search(b"not an image"), 415, "not an image"),
    (lambda c: c.search_id(0, k=10**4), 422, "k: must be 1 to 200"),
])
def test_refusals_are_client_errors_with_the_servers_reason(server, call, status, message):
    url, _ = server
    with pytest.raises(ClientError) as err:
        call(Client(url))
    assert err.value.status == status and message in err.value.message


def test_decide_through_the_client(folder_root, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(folder_root, root)
    with BackgroundServer(serve_config(folder_root, root=str(root), reviewer="bob")) as url:
        client = Client(url)
        group = client.groups()["groups"][0]
        now = client.decide("keeper", id=group["members"][1]["id"])
        assert now["members"][0]["key"] == group["members"][1]["key"] and now["members"][0]["keeper"]
        assert client.decisions()["total"] == 1
        with pytest.raises(ClientError, match="409: .* is the keeper already"):
            client.decide("keeper", id=group["members"][1]["id"])
    assert read_decisions(root).column("who").to_pylist() == ["bob"]
