"""Uploads are embedded with exactly the index's provenance, extras and kept columns included."""

from __future__ import annotations

import pytest

from pipeline.errors import MixedProvenanceError
from pipeline.extract.runner import run_extract
from pipeline.index.build import IndexConfig, build_index
from pipeline.roots.features import open_features
from pipeline.serve.config import ServeConfig
from pipeline.serve.embed import QueryEmbedder, query_config
from pipeline.serve.service import Service
from tests.conftest import make_image, tiny_config


def test_an_index_of_features_with_extras_and_kept_columns_answers_uploads(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(5):
        make_image(i, (80, 60)).save(photos / f"p{i}.png")
    out = tmp_path / "out"
    run_extract(tiny_config(out, images=str(photos), extras=("gem", "layers"), last_layers=2,
                            keep_columns=("caption",)))
    build_index(IndexConfig(features=str(out), feature="concat", progress=False))
    prov = open_features(out).provenance
    cfg = query_config(prov, "cpu", None)
    assert (cfg.extras, cfg.keep_columns, cfg.last_layers, cfg.resolution) == (("gem", "layers"), ("caption",), 2, 56)
    service = Service(ServeConfig(index=str(out / "index"), device="cpu", progress=False))
    hits = service.by_image((photos / "p3.png").read_bytes(), k=2).hits
    assert hits[0].key == "p3.png" and hits[0].similarity == pytest.approx(1.0, abs=1e-4)
    assert service.by_id(hits[0].id, k=2).hits == hits  # the stored vector of p3 is the upload's


def test_a_model_that_does_not_give_the_index_fingerprint_is_refused(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    make_image(0).save(photos / "a.png")
    run_extract(tiny_config(tmp_path / "out", images=str(photos)))
    prov = open_features(tmp_path / "out").provenance
    forged = {**prov, "fingerprint": "0" * 16}  # as if the index had been made by other weights
    with pytest.raises(MixedProvenanceError, match="the server's model"):
        QueryEmbedder(forged, "cls", 10**6, "cpu").load()


@pytest.mark.parametrize("side", [60000, 2**31 - 1])
def test_a_decompression_bomb_is_refused_in_the_servers_words_with_its_limit(side):
    from pipeline.serve.embed import UploadError, check_image
    from tests.serve.test_security import png_header

    with pytest.raises(UploadError) as err:
        check_image(png_header(side, side), 4_000_000)
    assert err.value.status == 413
    assert err.value.message == f"the image has {side * side} pixels, more than the server's limit of 4000000"
