"""Every script in benchmarks/ runs at a tiny size and reports sane figures, so the benchmarks cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.io.schema import META_FIELDS, read_provenance
from pipeline.provenance import fingerprint
from tests.conftest import SHARED_DATA, shared_data

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "benchmarks"
# the scripts this file runs (device_check.py: tests/benchmarks/test_device_check.py)
SMOKED = ("device_check.py", "curate_scale.py", "dedup_against.py", "int8.py", "dedup_quality.py", "dedup_scale.py",
          "serve_load.py", "long_tail.py", "device_decode.py", "scale_10m.py")
TINY_DEDUP_SCALE = ["--n", "2000", "--shards", "4", "--clusters", "16", "--eval-sample", "200", "--no-progress"]


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, f"{script} {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_every_benchmark_script_has_a_smoke_test():
    assert sorted(p.name for p in BENCHMARKS.glob("*.py")) == sorted(SMOKED)


@pytest.fixture(scope="module")
def dedup_scale(tmp_path_factory) -> tuple[Path, dict, str]:
    """dedup_scale.py at 2,000 vectors: (its output folder, dedup_scale.json, stdout)."""
    out = tmp_path_factory.mktemp("dedup_scale")
    proc = run("dedup_scale.py", *TINY_DEDUP_SCALE, "--out", str(out))
    return out, json.loads((out / "dedup_scale.json").read_text()), proc.stdout


def test_dedup_scale_finds_every_planted_copy_and_nothing_else(dedup_scale):
    out, result, stdout = dedup_scale
    assert result["params"]["n"] == 2000 and result["generate"]["reused"] is False
    quality = result["quality"]
    assert quality["planted_copies"] == 20 and quality["planted_groups"] > 0
    assert quality["planted_pair_recall"] == 1.0 and quality["planted_groups_exact_fraction"] == 1.0
    assert quality["false_components"] == 0 and quality["unplanted_rows_grouped"] == 0
    assert quality["graph_candidate_recall_planted"] == 1.0
    assert quality["graph_recall_at_k_sample"] >= 0.99 and quality["sample_rows"] == 200  # a Flat index: exact
    assert 0 <= quality["expected_chance_phash_pairs"] < 1
    summary = result["dedup_summary"]
    assert summary["images"] == 2000 and summary["removed"] == 20
    assert summary["stages"]["phash"]["orientations"] == 8 and summary["stages"]["exact"]["edges"] == 0
    assert result["index"]["factory"] == "Flat"
    for stage in ("index", "graph", "dedup"):
        assert result["stages"][stage]["ok"] and result["stages"][stage]["wall_s"] >= 0
    assert {"phash_edges", "components", "embedding_edges"} <= set(result["stages"]["dedup"]["breakdown"])
    assert "warning" not in result  # the dedup stage reused the timed index and graph
    assert "planted_pair_recall" in stdout and "dedup_scale: n=2000" in stdout


def test_dedup_scale_writes_every_metadata_column_and_the_pipelines_fingerprint(dedup_scale):
    out, _, _ = dedup_scale
    files = sorted((out / "features").glob("*.parquet"))
    assert len(files) == 4
    assert set(META_FIELDS) <= set(pq.read_schema(files[0]).names)
    prov = read_provenance(files[0])
    assert prov["fingerprint"] == fingerprint(prov)


def test_dedup_scale_resume_reuses_the_features_and_the_index(dedup_scale):
    out, first, _ = dedup_scale
    run("dedup_scale.py", *TINY_DEDUP_SCALE, "--out", str(out), "--resume")
    again = json.loads((out / "dedup_scale.json").read_text())
    assert again["generate"] == {"reused": True}
    assert again["stages"]["index"]["reused_from_previous_run"] is True
    assert again["quality"]["planted_pair_recall"] == 1.0
    assert again["previous_run"]["started"] == first["started"]


def test_curate_scale_sample_mode_selects_every_seeds_source(dedup_scale, tmp_path):
    pool, _, _ = dedup_scale
    proc = run("curate_scale.py", "--pool", str(pool), "--queries", "50", "--clusters", "8",
               "--out", str(tmp_path))
    result = json.loads((tmp_path / "curate_scale.json").read_text())
    sample, cluster = result["sample"], result["cluster"]
    assert sample["seed_sources_selected"] == 1.0  # seeds are their source at cosine ≈ 0.9: its nearest
    assert 50 <= sample["selected"] <= 50 * 4 and sample["source"]["queries"] == 50
    assert 0 < cluster["selected"] <= 2000 and 0 <= cluster["seed_sources_selected"] <= 1
    assert cluster["source"]["clusters_used"] >= 1
    assert "100.0% of the seeds' source images" in proc.stdout


@pytest.mark.real_data
def test_dedup_quality_on_the_smallest_labelled_folder(tmp_path):
    shared_data("jenssegers_imagehash", "groups.csv")
    proc = run("dedup_quality.py", "--data", str(SHARED_DATA), "--folders", "jenssegers_imagehash",
               "--work", str(tmp_path / "work"), "--out", str(tmp_path / "quality.json"), "--proposed")
    result = json.loads((tmp_path / "quality.json").read_text())
    total = result["total"]
    assert set(total) == {"exact", "exact+phash", "all", "proposed:+transpose"}
    assert total["exact+phash"]["precision"] == 1.0 and total["exact+phash"]["recall"] >= 0.95
    assert total["exact"]["precision"] == 1.0 and total["exact"]["recall"] < total["exact+phash"]["recall"]
    assert total["all"] == total["exact+phash"]  # random weights: the embedding stage is off
    (folder,) = result["folders"]
    assert folder["decoded"] == 27 and folder["failed_keys"] == []
    assert "wrote" in proc.stdout and "TOTAL (pairs summed)" in proc.stdout


def test_dedup_against_finds_the_planted_copies_of_the_collection(tmp_path):
    """New images against a collection: every planted copy of an old image is a duplicate of its source, the
    same new rows are grouped as by a full rerun, and both runs are timed."""
    out = tmp_path / "against"
    proc = run("dedup_against.py", "--old", "1000", "--new", "500", "--clusters", "16", "--dup-fraction", "0.1",
               "--out", str(out))
    result = json.loads((out / "dedup_against.json").read_text())
    planted = result["planted"]
    assert planted["copies_of_old"] >= 5 and planted["copies_of_new"] >= 3
    assert planted["found_as_duplicate_of_their_source"] == planted["copies_of_old"]
    assert planted["grouped_with_their_new_source"] == planted["copies_of_new"]
    agree = result["agreement_with_full_run"]
    assert agree["same"] == agree["new_rows_grouped_full"] == agree["new_rows_grouped_against"]
    assert result["against"]["images"] == 500 and result["against"]["collection"] == 1000
    assert all(v > 0 for v in result["seconds"].values()) and "--against" in proc.stdout


def test_int8_measures_every_variant_against_bf16_and_fp32(tmp_path):
    """int8.py eagerly on a one-block ViT at 56 px: each variant's speed, its ratio to bf16 and its CLS cosine
    against fp32 are reported (the full run compiles them: minutes). 6 photos: 3 held out for fidelity, more than
    the static graph's batch of 2 (padded chunks)."""
    proc = run("int8.py", "--model-kwargs", "depth=1,img_size=56", "--resolution", "56", "--photos", "6",
               "--batch", "2", "--rounds", "1", "--repeats", "1", "--no-compile", "--out", str(tmp_path))
    result = json.loads((tmp_path / "int8.json").read_text())
    variants = result["variants"]
    # no compile: no bf16_compile
    assert set(variants) == {"bf16_eager", "int8_static", "int8_weight_only", "int8_dynamic"}
    for name, block in variants.items():
        assert "error" not in block, (name, block)
        assert block["images_per_second"] > 0 and len(block["rounds"]) == 1
        assert 0.99 < block["cls_cosine_min"] <= block["cls_cosine_mean"] <= 1.0 + 1e-6
        if name != "bf16_eager":
            bf16 = variants["bf16_eager"]["rounds"][0]
            assert block["ratio_vs_bf16_eager"] == pytest.approx(block["rounds"][0] / bf16)
    assert result["compiled"] is False and result["capability"]["flags"] is not None
    assert "int8_static" in proc.stdout and "machine:" in proc.stdout


def test_serve_load_answers_every_query_of_both_kinds(tmp_path):
    """The load test at 2,000 vectors, 2 clients, 0.5 s per phase: the server started in a subprocess answers
    key and image queries with no error, its figures are sane, and it is stopped at the end."""
    out = tmp_path / "serve_load"
    proc = run("serve_load.py", "--n", "2000", "--shards", "4", "--factory", "IVF16,PQ16x4fs", "--clients", "2",
               "--seconds", "0.5", "--model-kwargs", "depth=2", "--resolution", "56", "--out", str(out),
               "--no-progress")
    result = json.loads((out / "serve_load.json").read_text())
    assert result["errors"] == 0
    assert (result["setup"]["index"]["count"], result["setup"]["index"]["factory"]) == (2000, "IVF16,PQ16x4fs")
    for phase in ("key_queries", "image_queries"):
        r = result[phase]
        assert r["requests"] > 0 and r["errors"] == 0 and r["qps"] > 0, (phase, r)
        assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] <= r["max_ms"]
    server = result["server"]
    assert server["health"]["index"]["count"] == 2000 and server["health"]["queries_by_id"]
    assert 0 < server["after_start"]["rss_mib"] <= server["after_image_queries"]["peak_rss_mib"]
    assert "RANDOM weights" in result["note"] and "errors: 0" in proc.stdout
    assert "key_queries" in proc.stdout and "image_queries" in proc.stdout


def test_long_tail_scores_every_method_at_the_same_budget(tmp_path):
    """The long-tail benchmark at 6,000 × 32 (300 concepts, 900 images each method): resampling hierarchical
    k-means covers more of the rare concepts than plain hierarchical k-means, which covers more than random."""
    proc = run("long_tail.py", "--vectors", "6000", "--dim", "32", "--concepts", "300", "--budget", "900",
               "--seed", "2", "--out", str(tmp_path), "--no-progress")
    result = json.loads((tmp_path / "long_tail.json").read_text())
    pool, methods = result["pool"], result["methods"]
    assert (pool["vectors"], pool["concepts"], pool["rare_concepts"]) == (6000, 300, 150) and pool["smallest"] >= 5
    assert set(methods) == {"random", "plain", "resampling"}
    assert all(m["selected"] == 900 and 0 < m["rare_coverage"] <= 1 and 0 < m["coverage"] <= 1
               for m in methods.values())
    assert methods["plain"]["plan"]["steps"] == [0, 0, 0] and methods["resampling"]["plan"]["steps"] == [10, 0, 0]
    rare = {name: m["rare_coverage"] for name, m in methods.items()}
    assert rare["resampling"] > rare["plain"] > rare["random"], rare
    assert result["peak_rss_gib"] > 0 and "rare coverage" in proc.stdout


def test_device_decode_matches_the_cpu_path_on_seeded_photos(tmp_path):
    """The device decode's parity script on two photos made in code (one drafted at 1/2): pixels without draft
    within 2 levels, pHashes within 2 bits, every JPEG taken by the device path."""
    run("device_decode.py", "--seeded", "2", "--out", str(tmp_path))
    result = json.loads((tmp_path / "device_decode.json").read_text())
    assert result["jpegs"] == result["device_path"] == 2 and result["cpu_fallback"] == 0
    assert result["no_draft"]["pixels"]["max"] <= 2 and result["no_draft"]["phash_bits"]["max"] <= 2
    assert 0 < result["draft"]["pixels"]["mean"] < result["draft"]["cpu_draft_vs_full_decode"]["mean"]
    assert result["draft"]["ms_per_image"]["device_path"] > 0


def test_scale_10m_runs_the_jobs_as_make_does_beside_their_plan(tmp_path):
    """scale_10m.py at 3,000 vectors: make dedup and make index with their own defaults, measured per window
    next to their --plan, the planted copies found, every exact edge above the threshold found, serving timed."""
    proc = run("scale_10m.py", "--n", "3000", "--shards", "4", "--clusters", "16", "--serve-requests", "20",
               "--out", str(tmp_path))
    result = json.loads((tmp_path / "scale_10m.json").read_text())
    dedup = result["dedup"]
    assert dedup["command"] == f"make dedup FEATURES={tmp_path}" and dedup["factory"] == "Flat"
    assert dedup["run"]["command"].endswith(f"jobs.dedup --features {tmp_path} --no-progress")
    assert set(dedup["compared"]) == {"index", "graph", "rest", "whole"}
    for window in dedup["compared"].values():
        assert window["peak_rss_gib"] > 0.05 and window["predicted_peak_gib"] > 0.05
        assert 0.5 < window["peak_ratio"] < 2  # the plan's figures beside the measured ones
    assert "make dedup: 3,000 × 384" in dedup["plan"]
    quality = result["quality"]
    assert quality["planted_pair_recall"] == 1.0 and quality["false_components"] == 0
    assert quality["edge_recall_graph"] == 1.0 and quality["edge_recall_component"] == 1.0
    assert quality["exact_edges_above_threshold"] > 0 and quality["queries"] == 1000
    assert result["index"]["factory"] == "Flat" and result["index"]["compared"]["all"]["disk_gib"] > 0
    serve = result["serve"]
    assert serve["engine_one_query"]["n"] == 20 and serve["engine_batch_64"]["p50_ms"] > 0
    assert serve["serve_http_one_query"]["p99_ms"] >= serve["serve_http_one_query"]["p50_ms"] > 0
    assert len(serve["search_cold_s"]) == 3 and min(serve["search_cold_s"]) > 0
    assert "scale_10m: n=3,000" in proc.stdout and "planted-pair recall 1.0" in proc.stdout
