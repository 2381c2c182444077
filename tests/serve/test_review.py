"""Reviewing duplicate groups over HTTP: decisions change the keeper, are refused when they change nothing, and
land in review/decisions.parquet with who and when; pages post them with a redirect back."""

from __future__ import annotations

import shutil

import httpx
import pytest

from pipeline.dedup.decisions import read_decisions
from pipeline.serve.run import BackgroundServer
from tests.serve.conftest import serve_config


@pytest.fixture
def review(folder_root, tmp_path):
    """A server whose review goes to a copy of the root: (client, the copy)."""
    root = tmp_path / "root"
    shutil.copytree(folder_root, root)
    with BackgroundServer(serve_config(folder_root, root=str(root), reviewer="alice")) as url, \
            httpx.Client(base_url=url, timeout=60) as client:
        yield client, root


def members(group: dict) -> dict[str, dict]:
    return {m["key"]: m for m in group["members"]}


def test_a_new_keeper_replaces_the_old_one_and_is_logged(review):
    client, root = review
    group = client.get("/api/groups").json()["groups"][0]
    old, new = group["members"][0], members(group)["copies/img00_a.jpg"]
    assert old["keeper"] and not new["keeper"]
    answer = client.post("/api/decisions", json={"action": "keeper", "id": new["id"]})
    assert answer.status_code == 200
    now = members(answer.json()["group"])
    assert now["copies/img00_a.jpg"]["keeper"] and now["copies/img00_a.jpg"]["reason"] == "keep"
    assert not now[old["key"]]["keeper"] and now[old["key"]]["reason"] == "reviewed"
    assert answer.json()["group"]["members"][0]["key"] == "copies/img00_a.jpg"  # the keeper first
    decision = now["copies/img00_a.jpg"]["decision"]
    assert decision["who"] == "alice" and decision["action"] == "keeper"
    log = read_decisions(root).to_pylist()
    assert [(d["who"], d["action"], d["key"], d["id"], d["component"]) for d in log] == [
        ("alice", "keeper", "copies/img00_a.jpg", new["id"], group["component"])]
    assert client.get("/api/groups").json()["groups"][0] == answer.json()["group"]  # re-read from the log
    assert client.get("/api/decisions").json()["decisions"][0]["key"] == "copies/img00_a.jpg"


def test_not_a_duplicate_and_its_undo(review):
    client, root = review
    group = client.get("/api/groups").json()["groups"][0]
    other = group["members"][1]
    alone = client.post("/api/decisions", json={"action": "not_duplicate", "id": other["id"]}).json()["group"]
    assert members(alone)[other["key"]]["reason"] == "not_duplicate" and members(alone)[other["key"]]["keep"]
    assert not members(alone)[other["key"]]["keeper"] and alone["members"][0]["keeper"]
    back = client.post("/api/decisions", json={"action": "duplicate", "id": other["id"]}).json()["group"]
    assert members(back)[other["key"]]["reason"] == "exact" and not members(back)[other["key"]]["keep"]
    assert [d["action"] for d in read_decisions(root).to_pylist()] == ["not_duplicate", "duplicate"]


@pytest.mark.parametrize("action, which, status, message", [
    ("keeper", 0, 409, "is the keeper already"),
    ("not_duplicate", 0, 409, "is the keeper: make another image the keeper first"),
    ("duplicate", 1, 409, "nothing to undo"),
    ("delete", 1, 400, "action must be one of"),
])
def test_decisions_that_change_nothing_are_refused_and_not_logged(review, action, which, status, message):
    client, root = review
    member = client.get("/api/groups").json()["groups"][0]["members"][which]
    answer = client.post("/api/decisions", json={"action": action, "id": member["id"]})
    assert answer.status_code == status and message in answer.json()["error"]
    assert read_decisions(root).num_rows == 0


def test_unknown_ids_and_bad_bodies_are_refused(review):
    client, root = review
    unique = next(i for i in range(14) if i not in {m["id"] for g in client.get("/api/groups").json()["groups"]
                                                     for m in g["members"]})
    assert client.post("/api/decisions", json={"action": "keeper", "id": unique}).status_code == 404
    assert client.post("/api/decisions", json={"action": "keeper", "id": -1}).status_code == 422
    assert client.post("/api/decisions", content=b"not json",
                       headers={"content-type": "application/json"}).status_code == 422
    assert read_decisions(root).num_rows == 0


def test_the_page_form_posts_a_decision_and_redirects_back(review):
    client, root = review
    group = client.get("/api/groups").json()["groups"][0]
    target = group["members"][2]
    origin = str(client.base_url).rstrip("/")
    answer = client.post("/groups/decide", data={"action": "keeper", "id": target["id"], "page": 0},
                         headers={"Origin": origin, "Sec-Fetch-Site": "same-origin"}, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == f"/groups?page=0#g{group['component']}"
    page = client.get(answer.headers["location"]).text
    assert "keeper by alice" in page
    assert read_decisions(root).column("key").to_pylist() == [target["key"]]
    refused = client.post("/groups/decide", data={"action": "keeper", "id": target["id"], "page": 0})
    assert refused.status_code == 409 and "is the keeper already" in refused.text  # a page, not JSON
    assert client.post("/groups/decide", data={"action": "keeper", "id": "x"}).status_code == 400
