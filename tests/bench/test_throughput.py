"""pipeline/bench/throughput.py and run.py on a tiny model: the numbers' shape and sense, and one whole bench run."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from pipeline.bench import run as bench_run
from pipeline.bench.machine import matmul_gflops
from pipeline.bench.run import BenchConfig, format_bench, prepare_shards, run_bench
from pipeline.bench.throughput import (
    backbone_throughput,
    dynamic_resolution,
    end_to_end_throughput,
    fast_paths,
    flops_per_image,
    naive_loop,
    plot,
    real_batch,
    sweep,
)
from pipeline.errors import ConfigError
from pipeline.extract import allocator
from pipeline.extract.backbone import create_backbone
from pipeline.extract.runner import run_extract
from tests.conftest import TINY_KWARGS, TINY_MODEL, TINY_RES, make_image, tiny_config, write_shards


@pytest.fixture()
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    files = []
    for i in range(6):
        f = folder / f"p{i}.jpg"
        make_image(i, (90, 70)).save(f)
        files.append(f)
    return files


@pytest.fixture()
def restore_threads():
    """run_bench with threads=1 sets torch's threads for the process (one thread: no OpenMP contention with
    whatever else runs on a small machine); put them back for the tests after."""
    threads = torch.get_num_threads()
    yield 1
    torch.set_num_threads(threads)


def test_backbone_and_end_to_end_throughput(tmp_path):
    shards, keys = write_shards(tmp_path / "shards", 2, 3)
    cfg = tiny_config(tmp_path / "unused", shards=tuple(shards))
    alone = backbone_throughput(create_backbone(cfg, torch.device("cpu")), batch_size=2, warmup=1, repeats=2)
    assert set(alone) == {"batch_size", "images_per_second", "p50_ms", "p90_ms", "repeats", "warmup"}
    assert alone["images_per_second"] > 0 and alone["p90_ms"] >= alone["p50_ms"] > 0
    assert matmul_gflops(n=256, repeats=2) > 0
    e2e = end_to_end_throughput(cfg)
    assert e2e["images"] == len(keys) and e2e["failures"] == 0 and e2e["images_per_second"] > 0
    assert not (tmp_path / "unused").exists()  # the bench never writes into a user's OUT


def test_bench_pieces_on_a_tiny_model(tmp_path, photos):
    cfg = tiny_config(tmp_path / "unused", images=str(tmp_path))
    backbone = create_backbone(cfg, torch.device("cpu"))
    flops = flops_per_image(backbone)
    assert 1e6 < flops < 1e9  # 2 blocks, 64 wide, 21 tokens
    rows = sweep(backbone, [1, 2], images_per_size=4)
    assert [r["batch_size"] for r in rows] == [1, 2] and all(r["gflops_achieved"] > 0 for r in rows)
    naive = naive_loop(cfg.model, photos[:3], 56, cfg)
    assert naive["images"] == 3 and naive["images_per_second"] > 0
    fp = fast_paths(cfg, backbone, photos, batch_size=2, variants={"bf16": replace(cfg, precision="bf16")})
    assert set(fp) == {"bf16"} and fp["bf16"]["cls_cosine_min"] > 0.9
    result = {"model": cfg.model, "resolution": 56, "device": "cpu", "batch_size": 2, "matmul_gflops": 50.0,
              "flops_per_image": flops, "backbone_sweep": rows, "backbone_at_batch": rows[-1],
              "end_to_end": {"images_per_second": 1.0}, "naive_loop": naive, "fast_paths": fp}
    plot(result, tmp_path / "bench.png")
    assert Image.open(tmp_path / "bench.png").size[0] > 500


def test_fast_path_fidelity_is_the_cosine_of_the_two_forwards(tmp_path, photos):
    cfg = tiny_config(tmp_path / "unused", images=str(tmp_path))
    base = create_backbone(cfg, torch.device("cpu"))
    other = replace(cfg, model_kwargs=(*cfg.model_kwargs, ("qkv_bias", False)))  # another model: cosine < 1
    fp = fast_paths(cfg, base, photos, batch_size=2, variants={"other": other})["other"]
    images = real_batch(base, photos)
    a = base(images)["cls"].float().numpy().astype(np.float64)
    b = create_backbone(other, torch.device("cpu"))(images)["cls"].float().numpy()
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert fp["cls_cosine_min"] == pytest.approx(cos.min(), abs=1e-5)
    assert fp["cls_cosine_mean"] == pytest.approx(cos.mean(), abs=1e-5)


def test_the_dropped_int8_path_is_refused_with_the_reason_and_old_fingerprints_hold(tmp_path):
    """Issue 13: dynamic int8 ran slower than bf16 and failed parity, so it was dropped; `quantize` stays null
    in the provenance so that roots made before keep their fingerprints."""
    for value in ("int8", "int4"):
        with pytest.raises(ConfigError, match="dynamic int8 path was dropped"):
            tiny_config(tmp_path, images=str(tmp_path), quantize=value)
    plain = create_backbone(tiny_config(tmp_path, images=str(tmp_path)), torch.device("cpu")).provenance()
    assert "quantize" in plain and plain["quantize"] is None


def test_dynamic_resolution_against_the_extracted_features(tmp_path, photos):
    """Tokens and the fixed-vs-dynamic CLS cosine, checked against what `run_extract` stores for the same
    photos in each mode (float32), with the cosine computed in NumPy."""
    shards, _ = write_shards(tmp_path / "shards", 1, 3)
    cfg = tiny_config(tmp_path / "unused", shards=tuple(shards))
    r = dynamic_resolution(cfg, photos[:2])
    assert r["images"] == 3 and r["tokens_per_image_fixed"] == 16
    assert r["tokens_per_image_dynamic"] == 12  # 90×70 photos → 56×42 → 4×3 patches

    two = tmp_path / "two"
    two.mkdir()
    for f in photos[:2]:
        shutil.copy(f, two / f.name)
    cls = {}
    for mode in ("fixed", "dynamic"):
        run_extract(tiny_config(tmp_path / mode, images=str(two), resize_mode=mode, dtype="float32"))
        df = pd.read_parquet(tmp_path / mode / "features").set_index("key").sort_index()
        cls[mode] = np.stack(df.cls.to_numpy()).astype(np.float64)
    a, b = cls["fixed"], cls["dynamic"]
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() < 0.9999  # different crops: the check below is not 1 == 1
    assert r["cls_cosine_vs_fixed_min"] == pytest.approx(cos.min(), abs=1e-4)
    assert r["cls_cosine_vs_fixed_mean"] == pytest.approx(cos.mean(), abs=1e-4)


def test_prepare_shards_packs_once_and_reuses(tmp_path, photos):
    shards, files = prepare_shards(tmp_path / "work", 4, str(photos[0].parent))
    assert [f.name for f in files] == [f"p{i}.jpg" for i in range(4)]
    listing = tmp_path / "work" / "shards-4" / "shards.txt"
    assert shards == str(listing) and listing.read_text().split() == ["bench-000000.tar"]
    mtime = listing.stat().st_mtime_ns
    assert prepare_shards(tmp_path / "work", 4, str(photos[0].parent))[0] == shards
    assert listing.stat().st_mtime_ns == mtime


def test_run_bench_smoke_on_a_tiny_model(tmp_path, photos, restore_threads):
    """fp32 only with the fast paths; auto would be bf16 (injected AMX flags) but is not measured: said so."""
    cfg = BenchConfig(out=str(tmp_path / "out"), photos=str(photos[0].parent), model=TINY_MODEL,
                      model_kwargs=TINY_KWARGS, device="cpu", resolution=TINY_RES, batch_size=2, batch_sizes=(1, 2),
                      images=4, naive_images=2, warmup=0, repeats=1, workers=0, compile=False, matmul_size=128,
                      precisions=("fp32",), threads=restore_threads, rounds=1, loader_photos=2)
    result = run_bench(cfg, flags={"amx_bf16", "amx_tile"}).record
    assert json.loads((tmp_path / "out" / "bench.json").read_text()) == json.loads(json.dumps(result))
    assert Image.open(tmp_path / "out" / "bench.png").size[0] > 500
    assert list(result["precisions"]) == ["fp32"] and result["capability"]["flags"] == ["amx_tile", "amx_bf16"]
    assert result["threads"] == result["capability"]["torch_threads"] == 1
    assert result["capability"]["freed_memory_kept"] is allocator.keep_freed_memory()  # the process's state
    assert [r["batch_size"] for r in result["backbone_sweep"]] == [1, 2]
    assert result["end_to_end"]["images"] == 4 and result["naive_loop"]["images"] == 2
    assert result["fast_paths"] == {} and result["dynamic_resolution"]["images"] == 4  # compile=False
    assert result["end_to_end"]["rounds"] == [result["end_to_end"]["images_per_second"]]  # rounds=1
    assert result["ratio_end_to_end_vs_backbone"] == pytest.approx(result["ratio_rounds"][0])
    text = format_bench(result)
    lines = text.splitlines()
    if torch.backends.mkldnn.is_available():
        assert lines[0] == "auto → bf16 (the CPU computes bf16 natively (amx_bf16)): not measured (--precisions fp32)"
    assert lines[1].startswith("machine: ") and lines[2].startswith("matmul limits (128² product, ")
    assert "int8" not in text.split("\n", 3)[3]  # beyond the machine's int8 limit: no int8 path
    # headline, machine, limits; per precision: ceiling, header, 2 sweep rows, backbone, end-to-end, the ratio
    # over the in-run backbone, the ratio over the backbone around the run, the in-run shares, the loader's
    # budget; loader, naive, dynamic
    assert len(lines) == 3 + (1 + 1 + 2 + 4 + 1 + 1) + 3


def test_run_bench_per_precision_on_generated_photos(tmp_path, monkeypatch, restore_threads):
    """Issue 13: with native bf16 (injected flags) the default precisions are fp32 and bf16; each block's ratio
    is its own end-to-end over its own backbone, its fraction is of its own limit; the headline is auto's."""
    if not torch.backends.mkldnn.is_available():
        pytest.skip("torch without oneDNN: auto stays fp32 whatever the flags")
    monkeypatch.setattr(bench_run, "COPYDAYS", tmp_path / "absent")  # generated 512×341 JPEGs
    cfg = BenchConfig(out=str(tmp_path / "out"), model=TINY_MODEL, model_kwargs=TINY_KWARGS, device="cpu",
                      resolution=TINY_RES, batch_size=2, batch_sizes=(1, 2), images=8, naive_images=2, warmup=0,
                      repeats=1, workers=0, fast_paths=False, matmul_size=128, threads=restore_threads)
    result = run_bench(cfg, flags={"avx2", "avx512f", "amx_bf16", "amx_int8"}).record
    assert len(list((tmp_path / "out" / "generated").glob("*.jpg"))) == 8
    assert result["auto"] == {"precision": "bf16", "why": "the CPU computes bf16 natively (amx_bf16)"}
    assert list(result["precisions"]) == ["fp32", "bf16"]
    assert list(result["matmul_limits"]) == ["fp32", "bf16", "int8"]
    flops = result["flops_per_image"]
    for name, block in result["precisions"].items():
        at, e2e = block["backbone_at_batch"], block["end_to_end"]
        assert block["precision"] == name and e2e["images"] == 8 and e2e["failures"] == 0
        assert [r["batch_size"] for r in block["backbone_sweep"]] == [1, 2]
        # B E B E B E B, and inside each E the backbone alone between its batches: each round's end-to-end over
        # its in-run backbone (4 batches of 2, one reference forward after every 2: workers=0, nothing to
        # pause), and over the mean of the backbone around it
        around, rounds = at["around_rounds"], e2e["rounds"]
        assert len(around) == 4 and len(rounds) == 3 == len(block["ratio_rounds"])
        assert at["images_per_second"] == pytest.approx(float(np.median(around)))
        assert e2e["images_per_second"] == pytest.approx(float(np.median(rounds)))
        assert e2e["reference_forwards_rounds"] == [2, 2, 2] and min(e2e["reference_rounds"]) > 0
        assert block["ratio_kind_rounds"] == ["in-run"] * 3
        assert block["ratio_rounds"] == pytest.approx([r / ref for r, ref in zip(rounds, e2e["reference_rounds"])])
        assert block["ratio_rounds_between_runs"] == pytest.approx([r / ((around[i] + around[i + 1]) / 2)
                                                                    for i, r in enumerate(rounds)])
        assert block["ratio_end_to_end_vs_backbone"] == pytest.approx(float(np.median(block["ratio_rounds"])))
        # measured inside each run: shares of its wall time, drift between runs cannot enter them
        for fwd, wait in zip(e2e["forward_share_rounds"], e2e["loader_wait_share_rounds"]):
            assert 0 < fwd < 1 and 0 <= wait < 1 and fwd + wait <= 1
        assert len(e2e["first_batch_seconds_rounds"]) == 3 and min(e2e["first_batch_seconds_rounds"]) > 0
        assert e2e["loader_cpu_ms_per_image_rounds"] == [0.0] * 3  # workers=0: no loader process to count
        assert block["matmul_gflops"] == result["matmul_limits"][name]["gflops"]
        assert block["backbone_fraction_of_limit"] == pytest.approx(at["images_per_second"] * flops / 1e9
                                                                    / block["matmul_gflops"])
        assert block["ceiling_images_per_second"] == pytest.approx(block["matmul_gflops"] * 1e9 / flops)
    fp32 = result["precisions"]["fp32"]
    for key in ("matmul_gflops", "backbone_sweep", "backbone_at_batch", "end_to_end", "ratio_end_to_end_vs_backbone",
                "backbone_fraction_of_limit"):
        assert result[key] == fp32[key]  # older readers see the fp32 run where they always did
    assert "fast_paths" not in result and "dynamic_resolution" not in result
    assert json.loads((tmp_path / "out" / "bench.json").read_text()) == json.loads(json.dumps(result))
    assert Image.open(tmp_path / "out" / "bench.png").size[0] > 500
    bf16 = result["precisions"]["bf16"]
    lines = format_bench(result).splitlines()
    assert lines[0] == (f"auto → bf16 (the CPU computes bf16 natively (amx_bf16)): end-to-end "
                        f"{bf16['end_to_end']['images_per_second']:.2f} images/s = "
                        f"{bf16['ratio_end_to_end_vs_backbone']:.3f} × backbone") == result["headline"]
    assert "flags avx2 avx512f amx_bf16 amx_int8;" in lines[1]
    assert lines[3].startswith("fp32: ceiling ") and lines[13].startswith("bf16: ceiling ")
    assert lines[19].startswith("  backbone alone inside each run (2 2 2 forwards between its batches, loader "
                                "paused): ")
    assert lines[19].endswith(f"; median = {bf16['ratio_end_to_end_vs_backbone']:.3f} × backbone")
    assert lines[20] == ("  over the backbone measured before and after each run (drifts between them): "
                         + " ".join(f"{r:.3f}" for r in bf16["ratio_rounds_between_runs"]))
    assert lines[21].startswith("  inside each run: forward pass ") and "waiting for the loader" in lines[21]
    # workers=0: the loader runs in the model's process, one core; its budget at the in-run backbone's median
    rate = float(np.median(bf16["end_to_end"]["reference_rounds"]))
    assert bf16["loader_budget"] == pytest.approx({"ratio": 0.95, "cores": 1, "backbone_images_per_second": rate,
                                                   "ms_per_image": 1e3 / rate * (1 / 0.95 - 1),
                                                   "spent_ms_per_image": 0.0})
    assert lines[22] == (f"  loader budget for 0.95 × backbone at {rate:.2f} images/s on 1 core: "
                         f"{1e3 / rate * (1 / 0.95 - 1):.2f} ms of the workers' CPU per image; spent 0.00 (median)")
    assert lines[23].startswith("loader, one thread, ms per image over 8 photos: sha1 ")
    costs = result["loader_costs"]["ms_per_image"]
    assert set(costs) == {"sha1", "decode", "phash", "preprocess", "stack", "total"} and min(costs.values()) > 0
    assert len(lines) == 3 + 2 * 10 + 1 + 1


def test_loader_budget_is_what_keeps_the_gated_run_at_the_ratio():
    """With the forward gate an image costs its forward time plus the loader's CPU over the cores: the budget is
    the loader CPU at which that comes to exactly the ratio (the issue's AMX machine: bf16 at ~47 images/s)."""
    forward_ms = 1e3 / 47
    budget = bench_run.loader_budget_ms(47.0, cores=2)
    assert budget == pytest.approx(2 * forward_ms * (1 / 0.95 - 1)) == pytest.approx(2.2396, abs=1e-4)
    assert forward_ms / (forward_ms + budget / 2) == pytest.approx(0.95)
    assert bench_run.loader_budget_ms(16.0, cores=2) == pytest.approx(6.5789, abs=1e-4)  # this EPYC, bf16
    assert bench_run.loader_budget_ms(16.0, cores=1, ratio=1.0) == 0.0
    for bad in ((0.0, 2, 0.95), (16.0, 0, 0.95), (16.0, 2, 0.0), (16.0, 2, 1.5)):
        with pytest.raises(ValueError):
            bench_run.loader_budget_ms(bad[0], cores=bad[1], ratio=bad[2])


def test_bench_config_mistakes_are_user_errors():
    with pytest.raises(ConfigError):
        BenchConfig(batch_sizes=())
    with pytest.raises(ConfigError):
        BenchConfig(images=0)


def test_versus_naive_runs_the_naive_loop_eager_and_auto_cold_then_warm(tmp_path, photos, restore_threads,
                                                                         monkeypatch):
    """The block's runs on 6 links to 3 photos; torch.compile stands in as the function itself (the real one is
    tests/extract/test_compiled.py's): auto on 6 images never compiles, so `on` fills the cache, then auto again."""
    from pipeline.bench.versus import format_versus, versus_naive
    from pipeline.extract import compiled

    compiles = []
    monkeypatch.setattr(compiled.torch, "compile", lambda fn, dynamic=None: compiles.append(dynamic) or fn)
    before = os.environ.get("DINOCURATE_CACHE")
    block = versus_naive(photos[:3], 6, tmp_path, TINY_MODEL, "random", TINY_KWARGS, TINY_RES, "cpu", 0)
    assert os.environ.get("DINOCURATE_CACHE") == before  # the block's own cache is gone, the session's back
    assert list(block["runs"]) == ["naive", "eager", "auto_cold", "on_cold", "auto_warm"]
    assert block["photos"] == 6 and block["distinct_photos"] == 3
    assert all(run["images"] == 6 for run in block["runs"].values())
    assert [block["runs"][n]["compiled"] for n in ("eager", "auto_cold", "on_cold", "auto_warm")] == \
        [False, False, True, False]
    assert compiles == [False]  # once, for one static shape
    assert block["runs"]["auto_cold"]["compile_why"].startswith("not compiled:")
    assert block["ratios_over_naive"]["naive"] == 1.0
    assert block["ratios_over_naive"]["eager"] == pytest.approx(
        block["runs"]["eager"]["images_per_second"] / block["runs"]["naive"]["images_per_second"])
    lines = format_versus(block)
    assert lines[0].startswith("naive loop vs make extract on 6 photos (3 distinct)")
    assert "on_cold" in lines[4] and "compiled in" in lines[4]
    assert sorted(p.name for p in (tmp_path / "versus-6").iterdir())[3] == f"000003_{photos[0].name}"
