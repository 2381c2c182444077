"""Every page's header: a banner when the index's weights are random, and a Selection link only when there is
a curate selection to show (pipeline/serve/pages.py `render`, templates/base.html)."""

from __future__ import annotations

import httpx
import numpy as np

from pipeline.index.build import IndexConfig, build_index
from pipeline.serve.run import BackgroundServer
from tests.conftest import write_feature_root
from tests.serve.conftest import serve_config

BANNER = "random weights: similarities mean nothing"


def test_random_weights_are_said_on_every_page_and_the_selection_link_needs_a_selection(tar_root):
    with BackgroundServer(serve_config(tar_root)) as url:  # random weights, no curate selection
        for path in ("/", "/groups", "/decisions"):
            page = httpx.get(url + path, timeout=60)
            assert page.status_code == 200 and BANNER in page.text, path
            assert 'href="/selection"' not in page.text, path


def test_the_selection_link_shows_once_there_is_a_selection(server):
    url, _ = server  # folder_root: random weights and a selection
    page = httpx.get(url + "/", timeout=60)
    assert 'href="/selection"' in page.text and BANNER in page.text
    assert httpx.get(url + "/selection", timeout=60).status_code == 200


def test_real_weights_get_no_banner(tmp_path):
    write_feature_root(tmp_path, np.random.default_rng(0).normal(size=(12, 8)).astype(np.float32))  # a file's
    build_index(IndexConfig(features=str(tmp_path), progress=False))
    with BackgroundServer(serve_config(tmp_path, index=str(tmp_path / "index"))) as url:
        page = httpx.get(url + "/", timeout=60)
        assert page.status_code == 200 and BANNER not in page.text and "random weights" not in page.text
