"""Bench and parity code paths on a tiny model (numbers are not asserted, only their shape and sense)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.extract.backbone import create_backbone
from pipeline.bench.throughput import fast_paths, flops_per_image, naive_loop, plot, real_batch, sweep
from pipeline.bench.parity import compare, format_table, run_parity
from tests.conftest import make_image, tiny_config


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
    c = a.copy()
    c[0, 0] = 1.5  # one outlier of 50 % among 20 elements is trimmed away (top 5 %)
    wide = np.tile(a, (1, 5))
    wide_c = wide.copy()
    wide_c[0, 0] = 1.5
    assert compare(wide, wide_c)["trimmed_rel"] == 0.0


def test_run_parity_rows_and_table(tmp_path, photos):
    cfg = tiny_config(tmp_path, images=str(tmp_path))
    images = real_batch(create_backbone(cfg, torch.device("cpu")), photos)
    assert images.dtype == torch.uint8 and images.shape == (6, 3, 56, 56)
    rows = run_parity(cfg, images)
    pairs = {r["pair"] for r in rows}
    assert pairs == {"unfused attention vs fused", "float16 storage vs float32", "int8 (CPU fast path) vs fp32",
                     "bf16 autocast vs fp32"}
    assert len(rows) == 8 and {r["feature"] for r in rows} == {"cls", "patch_mean"}
    fused = [r for r in rows if r["pair"] == "unfused attention vs fused"]
    assert all(r["pass"] and r["cosine_min"] > 0.99999 for r in fused)
    table = format_table(rows)
    assert table.count("PASS") + table.count("FAIL") == 8


def test_bench_pieces_on_a_tiny_model(tmp_path, photos):
    cfg = tiny_config(tmp_path / "unused", images=str(tmp_path))
    backbone = create_backbone(cfg, torch.device("cpu"))
    flops = flops_per_image(backbone)
    assert 1e6 < flops < 1e9  # 2 blocks, 64 wide, 21 tokens
    rows = sweep(backbone, [1, 2], images_per_size=4)
    assert [r["batch_size"] for r in rows] == [1, 2] and all(r["gflops_achieved"] > 0 for r in rows)
    naive = naive_loop(cfg.model, photos[:3], 56, cfg)
    assert naive["images"] == 3 and naive["images_per_second"] > 0
    fp = fast_paths(cfg, backbone, photos, batch_size=2, include_compile=False)
    assert set(fp) == {"int8"} and fp["int8"]["cls_cosine_min"] > 0.9
    result = {"model": cfg.model, "resolution": 56, "device": "cpu", "batch_size": 2, "matmul_gflops": 50.0,
              "flops_per_image": flops, "backbone_sweep": rows, "backbone_at_batch": rows[-1],
              "end_to_end": {"images_per_second": 1.0}, "naive_loop": naive, "fast_paths": fp}
    plot(result, tmp_path / "bench.png")
    from PIL import Image

    assert Image.open(tmp_path / "bench.png").size[0] > 500


def test_quantize_int8_refuses_accelerators_and_is_recorded(tmp_path):
    cfg = tiny_config(tmp_path, images=str(tmp_path), quantize="int8")
    backbone = create_backbone(cfg, torch.device("cpu"))
    assert backbone.provenance()["quantize"] == "int8"
    plain = create_backbone(tiny_config(tmp_path, images=str(tmp_path)), torch.device("cpu"))
    assert backbone.provenance()["fingerprint"] != plain.provenance()["fingerprint"]
    with pytest.raises(ValueError, match="quantize"):
        tiny_config(tmp_path, images=str(tmp_path), quantize="int4")


def test_dynamic_resolution_bench_path(tmp_path, photos):
    from pipeline.bench.throughput import dynamic_resolution
    from tests.conftest import write_shards

    shards, _ = write_shards(tmp_path / "shards", 1, 3)
    cfg = tiny_config(tmp_path / "unused", shards=tuple(shards))
    r = dynamic_resolution(cfg, photos[:2])
    assert r["images"] == 3 and r["tokens_per_image_fixed"] == 16
    assert r["tokens_per_image_dynamic"] == 12  # 90×70 photos → 56×42 → 4×3 patches
    assert -1 <= r["cls_cosine_vs_fixed_min"] <= 1
