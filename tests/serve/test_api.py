"""Every route of the server answers as documented, and its searches equal `make search` (pipeline search)."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.index.build import IndexConfig, build_index
from pipeline.index.search import run_search
from pipeline.io.schema import read_provenance
from pipeline.serve.config import ServeConfig
from pipeline.serve.engine import ServedIndex
from pipeline.serve.errors import ServeError
from pipeline.serve.run import BackgroundServer
from pipeline.serve.service import Service
from tests.conftest import make_image, write_feature_root
from tests.serve.conftest import EVIL, serve_config


@pytest.fixture(scope="module")
def http(server) -> httpx.Client:
    url, _ = server
    with httpx.Client(base_url=url, timeout=60) as client:
        yield client


def reference(table, query: str) -> list[tuple]:
    return [(r["key"], r["shard"], r["index"], r["similarity"]) for r in table.to_pylist() if r["query"] == query]


def served(results: list[dict]) -> list[tuple]:
    return [(r["key"], r["shard"], r["index"], r["similarity"]) for r in results]


def assert_same_neighbours(got: list[tuple], want: list[tuple]) -> None:
    assert [g[:3] for g in got] == [w[:3] for w in want]
    np.testing.assert_allclose([g[3] for g in got], [w[3] for w in want], rtol=0, atol=1e-6)


def test_health_describes_the_index_and_what_is_available(http, folder_root):
    h = http.get("/health").json()
    assert h["status"] == "ok" and h["index"]["count"] == 14 and h["index"]["factory"] == "Flat"
    assert h["index"]["feature"] == "cls" and h["index"]["dim"] == 64
    assert h["index"]["loading"] == "IO_FLAG_MMAP_IFC"  # a Flat index is mapped, not read into memory
    assert h["index"]["fingerprint"] == read_provenance(next((folder_root / "features").glob("*.parquet")))[
        "fingerprint"]
    assert h["queries_by_id"] and h["thumbnails"] and h["groups"] and h["selection"]
    assert h["limits"] == {"max_k": 200, "max_upload_mb": 1.0, "max_pixels": 4_000_000}


@pytest.mark.parametrize("name", ["img00.jpg", "img05.jpg"])  # img00 has two byte-identical copies: ties
def test_search_by_uploaded_image_equals_make_search(http, folder_root, name):
    image = folder_root.parent / "photos" / name
    want = reference(run_search(str(folder_root / "index"), str(image), k=6), name)
    got = http.post("/api/search", params={"k": 6}, content=image.read_bytes(),
                    headers={"content-type": "image/jpeg"})
    assert got.status_code == 200
    assert_same_neighbours(served(got.json()["results"]), want)
    assert len(want) == 6 and want[0][0].endswith("img00.jpg" if name == "img00.jpg" else name)
    multipart = http.post("/api/search", params={"k": 6}, files={"image": (name, image.read_bytes(), "image/jpeg")})
    assert multipart.json()["results"] == got.json()["results"]
    assert http.get("/health").json()["model"]["loaded"] is True


def test_search_by_key_and_by_id_equal_make_search_over_the_feature_root(http, folder_root):
    table = run_search(str(folder_root / "index"), str(folder_root), k=5)
    for key in ("img03.jpg", "copies/img00_a.jpg", EVIL):
        by_key = http.get("/api/search", params={"key": key, "k": 5}).json()
        assert_same_neighbours(served(by_key["results"]), reference(table, key))
        assert by_key["query"]["key"] == key
        by_id = http.get("/api/search", params={"id": by_key["query"]["id"], "k": 5}).json()
        assert by_id == by_key
    first = by_key["results"][0]
    assert first["thumbnail"] == f"/thumb/{first['id']}" and first["rank"] == 1


def test_k_defaults_to_the_servers_and_is_bounded(http):
    assert len(http.get("/api/search", params={"id": 3}).json()["results"]) == 5  # ServeConfig k=5
    assert len(http.get("/api/search", params={"id": 3, "k": 50}).json()["results"]) == 14  # all there are
    # one kind of mistake, one status and one message: a k out of 1..max_k (422, as other values out of range)
    for k in (201, 0, -3):
        answer = http.get("/api/search", params={"id": 3, "k": k})
        assert answer.status_code == 422 and answer.json()["error"] == f"k: must be 1 to 200, got {k}"
    assert http.get("/search", params={"id": 3, "k": 0}).status_code == 422


@pytest.mark.parametrize("params, status, message", [
    ({}, 400, "give exactly one of id= and key="),
    ({"id": 1, "key": "img03.jpg"}, 400, "give exactly one of id= and key="),
    ({"id": 14}, 404, "id 14 is not in the index (0 to 13)"),
    ({"key": "nope.jpg"}, 404, "no indexed image has this key"),
    ({"id": "x"}, 422, "id: "),
])
def test_search_errors_are_one_line_json(http, params, status, message):
    answer = http.get("/api/search", params=params)
    assert answer.status_code == status and answer.headers["content-type"] == "application/json"
    assert answer.json()["error"].startswith(message)


def colour(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.float64).reshape(-1, 3).mean(0)


def test_thumbnails_come_from_the_source_by_id(http, folder_root):
    meta = http.get("/api/images/7").json()
    assert meta == {"id": 7, "key": "img03.jpg", "shard": "folder-000001", "index": 3, "thumbnail": "/thumb/7",
                    "search": "/api/search?id=7"}
    thumb = http.get("/thumb/7")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    source = (folder_root.parent / "photos" / "img03.jpg").read_bytes()
    assert max(Image.open(io.BytesIO(thumb.content)).size) <= 256
    assert np.abs(colour(thumb.content) - colour(source)).max() < 4
    small = http.get("/thumb/7", params={"size": 32})
    assert Image.open(io.BytesIO(small.content)).size == (32, 24)  # 96×72 → 32 px wide
    assert http.get("/thumb/7", params={"size": 2000}).status_code == 422


def test_thumbnails_of_a_tar_shard_are_read_by_seeking(tar_root):
    with BackgroundServer(serve_config(tar_root)) as url:
        by_key = httpx.get(f"{url}/api/search", params={"key": "k04", "k": 2}).json()
        assert sorted(r["key"] for r in by_key["results"]) == ["k01", "k04"]  # byte-identical copies: one vector
        for n, i in enumerate([0, 1, 2, 3, 1, 4, 5, 6]):
            thumb = httpx.get(f"{url}/thumb/{n}")
            assert thumb.status_code == 200
            assert np.abs(colour(thumb.content) - colour(_jpeg(make_image(i * 7, (80, 60))))).max() < 4
        groups = httpx.get(f"{url}/api/groups").json()
        assert [[m["key"] for m in g["members"]] for g in groups["groups"]] == [["k01", "k04"]]


def _jpeg(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=95)
    return out.getvalue()


def test_groups_are_paged_biggest_first_keeper_first_with_links(http, folder_root):
    page = http.get("/api/groups", params={"per_page": 2}).json()
    assert (page["page"], page["per_page"], page["total"], page["pages"]) == (0, 2, 3, 2)
    sizes = [g["size"] for g in page["groups"]]
    assert sizes == [3, 2]
    first = page["groups"][0]
    # byte-identical copies: the keeper is the one with the shortest path
    assert [m["key"] for m in first["members"]] == ["img00.jpg", "copies/img00_a.jpg", "copies/img00_b.jpg"]
    assert [m["keeper"] for m in first["members"]] == [True, False, False] and not first["contaminated"]
    assert [m["keep_reason"] for m in first["members"]] == ["byte-identical to 2 others; shortest path", None, None]
    assert "kept: byte-identical to 2 others; shortest path" in http.get("/groups").text  # the page says it too
    for member in first["members"]:
        assert http.get(f"/api/images/{member['index_id']}").json()["key"] == member["key"]
        assert member["thumbnail"] == f"/thumb/{member['index_id']}" and member["decision"] is None
    second = http.get("/api/groups", params={"per_page": 2, "page": 1}).json()
    assert len(second["groups"]) == 1 and second["groups"][0]["size"] == 2
    assert http.get("/api/groups", params={"page": 9}).json()["groups"] == []
    one = http.get(f"/api/groups/{first['component']}").json()
    assert one == first
    assert http.get("/api/groups/999").status_code == 404
    total = pq.read_table(folder_root / "dedup" / "groups.parquet").to_pandas()
    assert page["total"] == (total.groupby("component").size() > 1).sum()


def test_selection_is_paged_by_source(http, folder_root):
    want = pq.read_table(folder_root / "curate" / "selected.parquet").to_pylist()
    got = http.get("/api/selection", params={"per_page": 5}).json()
    assert got["total"] == len(want) == 7 and got["sources"] == ["balanced", "seeds"] and len(got["rows"]) == 5
    assert [r["key"] for r in got["rows"]] == [r["key"] for r in want[:5]]
    assert all(r["thumbnail"] == f"/thumb/{r['index_id']}" and r["index_id"] == r["id"] for r in got["rows"])
    seeds = http.get("/api/selection", params={"source": "seeds", "page": 1, "per_page": 2}).json()
    assert seeds["total"] == 3 and [r["key"] for r in seeds["rows"]] == [want[5]["key"]]
    assert seeds["rows"][0]["similarity"] == pytest.approx(0.55) and seeds["pages"] == 2
    assert http.get("/api/selection", params={"source": "other"}).json()["total"] == 0


def test_pages_render_escaped_with_no_script(http):
    home = http.get("/")
    assert home.status_code == 200 and 'enctype="multipart/form-data"' in home.text and "<script" not in home.text
    results = http.get("/search", params={"id": 5, "k": 4})
    assert results.text.count('<figure class="result">') == 4
    groups = http.get("/groups").text
    assert groups.count('class="group') == 3 and groups.count('member keeper') == 3
    assert "<script" not in groups and "evil&lt;script&gt;alert(1)&lt;/script&gt;.jpg" in groups
    escaped = http.get("/search", params={"key": EVIL, "k": 14}).text
    assert "<script" not in escaped and escaped.count("evil&lt;script&gt;") >= 2  # the query and its own result
    assert http.get("/style.css").headers["content-type"].startswith("text/css")
    assert http.get("/selection").status_code == 200 and http.get("/decisions").status_code == 200
    missing = http.get("/search", params={"key": "nope"})
    assert missing.status_code == 404 and "no indexed image has this key" in missing.text
    assert missing.headers["content-type"].startswith("text/html")
    assert http.get("/search", follow_redirects=False).status_code == 303


def test_the_served_index_finds_ids_by_key_and_place(tmp_path):
    """Two shards holding one key: by key both, by (shard, index) one; a key search names them (409)."""
    rng = np.random.default_rng(0)
    keys = [f"k{i}" for i in range(6)] + ["k0"] + [f"k{i}" for i in range(7, 12)]
    write_feature_root(tmp_path, rng.normal(size=(12, 8)).astype(np.float32), keys=keys, per_shard=6)
    build_index(IndexConfig(features=str(tmp_path), progress=False))
    index = ServedIndex(tmp_path)
    assert index.ids_of_key("k0") == [0, 6] and index.ids_of_key("k7") == [7] and index.ids_of_key("x") == []
    assert index.id_at("part-0001", 0) == 6 and index.id_at("part-0001", 0, "k7") is None
    assert index.id_at("part-0001", 6) is None and index.id_at("part-9", 0) is None
    assert index.row(11) == ("k11", "part-0001", 5)
    with pytest.raises(IndexError):
        index.row(12)
    service = Service(ServeConfig(index=str(tmp_path), progress=False))
    with pytest.raises(ServeError, match="2 indexed images have this key .ids 0, 6.: search by id") as err:
        service.by_key("k0")
    assert err.value.status == 409
    assert service.images is None and "no config.json" in service.images_error  # made from arrays: no sources


def test_the_stored_vectors_copy_holds_the_feature_files_values_in_id_order(server, folder_root):
    (copy,) = (folder_root / "index").glob("vectors-cls-*.npy")
    matrix = np.load(copy)
    stored = np.concatenate([pq.read_table(f, columns=["cls"]).column("cls").combine_chunks().flatten()
                             .to_numpy(zero_copy_only=False).reshape(-1, 64)
                             for f in sorted((folder_root / "features").glob("*.parquet"))])
    assert matrix.dtype == np.float16 and matrix.shape == (14, 64)
    np.testing.assert_array_equal(matrix, stored)
