"""pipeline/bench/parity.py: the criteria against hand-computed values, every pair on a tiny model, the full check."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.bench.parity import (
    ParityConfig,
    compare,
    device_decoded,
    format_parity,
    format_table,
    run_parity,
    run_parity_check,
)
from pipeline.bench.throughput import real_batch
from pipeline.errors import ConfigError, MissingInputError
from pipeline.extract.backbone import create_backbone
from tests.conftest import TINY_KWARGS, TINY_MODEL, TINY_RES, make_image, tiny_config


@pytest.fixture()
def photos(tmp_path):
    files = []
    for i in range(6):
        f = tmp_path / f"p{i}.jpg"
        make_image(i, (90, 70)).save(f)
        files.append(f)
    return files


def test_compare_criteria_against_hand_computed_values():
    a = np.array([[1.0, 2.0, 3.0, 4.0]])
    same = compare(a, a.copy())
    assert same == {"cosine_min": pytest.approx(1.0), "mae": 0.0, "trimmed_rel": 0.0, "pass": True}
    b = a * 1.02  # 2 % everywhere: cosine 1, MAE 0.05, relative 2 % → fails the 1 % criterion
    r = compare(a, b)
    assert r["cosine_min"] == pytest.approx(1.0) and r["mae"] == pytest.approx(0.05)
    assert r["trimmed_rel"] == pytest.approx(0.02) and not r["pass"]
    wide = np.tile(a, (1, 5))
    wide_c = wide.copy()
    wide_c[0, 0] = 1.5  # one outlier of 50 % among 20 elements is trimmed away (top 5 %)
    assert compare(wide, wide_c)["trimmed_rel"] == 0.0


def test_run_parity_rows_and_table(tmp_path, photos):
    cfg = tiny_config(tmp_path, images=str(tmp_path))
    images = real_batch(create_backbone(cfg, torch.device("cpu")), photos)
    assert images.dtype == torch.uint8 and images.shape == (6, 3, 56, 56)
    rows = run_parity(cfg, images, flags={"avx2", "amx_bf16"})
    pairs = list(dict.fromkeys(r["pair"] for r in rows))
    auto = "bf16" if torch.backends.mkldnn.is_available() else "fp32"
    assert pairs == [f"auto ({auto}) vs fp32", "unfused attention vs fused", "float16 storage vs float32",
                     "bf16 autocast vs fp32"]  # int8 was dropped (issue 13)
    assert len(rows) == 8 and {r["feature"] for r in rows} == {"cls", "patch_mean"}
    fused = [r for r in rows if r["pair"] == "unfused attention vs fused"]
    assert all(r["pass"] and r["cosine_min"] > 0.99999 for r in fused)
    if auto == "bf16":  # auto on an AMX CPU is bf16 autocast: the same numbers as the bf16 pair, not 1 == 1
        for feature in ("cls", "patch_mean"):
            a, b = (next(r for r in rows if r["pair"] == p and r["feature"] == feature)
                    for p in ("auto (bf16) vs fp32", "bf16 autocast vs fp32"))
            assert {**a, "pair": ""} == {**b, "pair": ""} and a["trimmed_rel"] > 0
    table = format_table(rows)
    assert table.count("PASS") + table.count("FAIL") == 8
    assert table.splitlines()[2].startswith(f"auto ({auto}) vs fp32 ")  # the first row under the criteria


def test_auto_pair_is_trivial_where_auto_is_fp32(tmp_path, photos):
    cfg = tiny_config(tmp_path, images=str(tmp_path))
    images = real_batch(create_backbone(cfg, torch.device("cpu")), photos[:2])
    rows = run_parity(cfg, images, flags={"avx2", "avx512f", "avx512_vnni"})
    auto = [r for r in rows if r["pair"] == "auto (fp32) vs fp32"]
    assert [r["feature"] for r in auto] == ["cls", "patch_mean"] and rows[:2] == auto
    assert all(r["cosine_min"] == pytest.approx(1.0) and r["mae"] == 0 and r["trimmed_rel"] == 0 and r["pass"]
               for r in auto)


def test_run_parity_check_writes_the_record_it_returns(tmp_path, photos):
    cfg = ParityConfig(out=str(tmp_path / "out"), photos=str(photos[0].parent), model=TINY_MODEL,
                       model_kwargs=TINY_KWARGS, resolution=TINY_RES, images=4)
    record = run_parity_check(cfg, flags={"sse2"}).record
    assert json.loads((tmp_path / "out" / "parity.json").read_text()) == record
    assert record["images"] == 4 and record["photos"] == str(tmp_path) and len(record["rows"]) == 10
    assert record["pass"] == all(r["pass"] for r in record["rows"])
    decode = [r for r in record["rows"] if r["pair"] == "device decode vs cpu decode"]
    assert [r["feature"] for r in decode] == ["cls", "patch_mean"] and all(r["pass"] for r in decode)
    why = "the CPU has no native bf16 (no amx_bf16 or avx512_bf16 among its flags)"
    assert record["auto"] == {"precision": "fp32", "why": why, "pair": "auto (fp32) vs fp32", "trivial": True}
    text = format_parity(record)
    lines = text.splitlines()
    assert lines[0] == f"parity of {TINY_MODEL} (random weights) at 56 px on 4 photos from {tmp_path}"
    assert lines[1] == f"--precision auto → fp32 on this CPU ({why}); so its pair compares fp32 with itself: " \
                       "trivially PASS"
    assert format_table(record["rows"]) in text
    if torch.backends.mkldnn.is_available():
        bf16 = dict(record, auto={"precision": "bf16", "why": "amx", "pair": "auto (bf16) vs fp32", "trivial": False})
        assert format_parity(bf16).splitlines()[1] == ('--precision auto → bf16 on this CPU (amx); its pair '
                                                        '"auto (bf16) vs fp32" is the first row')


def test_device_decoded_replaces_the_jpegs_the_device_takes_and_keeps_the_rest(tmp_path, photos):
    """JPEGs through the device decoder (here torchvision's CPU one), a PNG kept as the CPU decoded it."""
    png = tmp_path / "kept.png"
    Image.open(photos[0]).save(png)
    files = [*photos[:3], png]
    backbone = create_backbone(tiny_config(tmp_path, images=str(tmp_path)), torch.device("cpu"))
    images = real_batch(backbone, files)
    out = device_decoded(files, images, backbone.preprocess, None)
    assert out.shape == images.shape and torch.equal(out[3], images[3])
    diff = (out[:3].int() - images[:3].int()).abs()
    assert 0 < diff.float().mean() < 1 and images.data_ptr() != out.data_ptr()


def test_parity_config_mistakes_are_user_errors(tmp_path):
    with pytest.raises(ConfigError):
        ParityConfig(images=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingInputError, match="no .jpg photos"):
        run_parity_check(ParityConfig(out=str(tmp_path / "out"), photos=str(tmp_path / "empty"), model=TINY_MODEL,
                                      model_kwargs=TINY_KWARGS, resolution=TINY_RES))
