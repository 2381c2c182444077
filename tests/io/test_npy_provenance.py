"""Provenance travels with exported vectors (roots/npy_origin.py): export-npy's sidecar, read by every stage."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from jobs import dedup as dedup_job
from pipeline.curate.npy_export import ExportNpyConfig, run_export_npy
from pipeline.dedup.config import DedupConfig
from pipeline.dedup.run import run_dedup
from pipeline.provenance import fingerprint, is_random
from pipeline.roots.features import open_features
from tests.conftest import write_feature_root

REPO = Path(__file__).resolve().parents[2]
RANDOM = {"model": "vit_test", "weights": {"source": "random", "sha256": "random", "seed": 0},
          "input_size": [3, 56, 56], "resize_mode": "fixed"}
N = 40


def alike(n: int = N, d: int = 32, seed: int = 0) -> np.ndarray:
    """What random weights give unrelated photos: one shared direction, a little noise (all cosines > 0.9)."""
    rng = np.random.default_rng(seed)
    return (3 * rng.normal(size=d) + 0.5 * rng.normal(size=(n, d))).astype(np.float32)


@pytest.fixture
def exported(tmp_path) -> Path:
    """`make export-npy FEATURES=root OUT=e` of a root extracted with random weights: e/emb.npy."""
    keys = [f"{'cat' if i % 2 else 'dog'}/img{i:03d}.jpg" for i in range(N)]
    write_feature_root(tmp_path / "root", alike(), keys=keys, provenance=dict(RANDOM))
    run_export_npy(ExportNpyConfig(features=str(tmp_path / "root"), out=str(tmp_path / "e"), progress=False))
    return tmp_path / "e" / "emb.npy"


def dedup_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """`python -m jobs.dedup ARGV` in this process: exit code, stdout, stderr."""
    with pytest.raises(SystemExit) as info:
        dedup_job.main([*argv, "--no-progress"])
    out, err = capsys.readouterr()
    return info.value.code, out, err


# ------------------------------------------------------------------------------------------------ the sidecar
def test_export_writes_the_provenance_beside_the_array_and_every_open_reads_it(exported):
    side = json.loads(exported.with_name("emb.provenance.json").read_text())
    root_prov = open_features(exported.parents[1] / "root").provenance
    assert side["model"] == "vit_test" and side["weights"]["source"] == "random"
    assert (side["feature"], side["dtype"], side["normalised"], side["rows"], side["dim"]) == ("cls", "float32",
                                                                                             True, N, 32)
    assert side["features"] == str((exported.parents[1] / "root").resolve())
    assert side["fingerprint"] == root_prov["fingerprint"] and side["provenance"] == root_prov
    fs = open_features(exported)
    assert is_random(fs.provenance) and fs.provenance["model"] == "vit_test"
    assert fs.provenance["origin"]["fingerprint"] == root_prov["fingerprint"]
    # what keys.parquet recorded before is still there
    about = json.loads(pq.read_schema(exported.with_name("keys.parquet")).metadata[b"dinocurate_export"])
    assert about["provenance"] == root_prov and about["rows"] == N
    # the fingerprint still counts the content only: the same bytes without a sidecar are the same features
    bare = exported.parents[1] / "bare.npy"
    shutil.copy(exported, bare)
    assert open_features(bare).provenance["fingerprint"] == fs.provenance["fingerprint"]
    assert fingerprint(fs.provenance) == fs.provenance["fingerprint"]
    assert "weights" not in open_features(bare).provenance


def test_without_a_sidecar_keys_parquet_says_it_given_or_beside(exported, tmp_path, caplog):
    exported.with_name("emb.provenance.json").unlink()  # an export made before the sidecar existed
    assert is_random(open_features(exported).provenance)  # keys.parquet beside it
    moved = tmp_path / "elsewhere" / "emb.npy"
    moved.parent.mkdir()
    shutil.copy(exported, moved)
    assert not is_random(open_features(moved).provenance)  # nothing says
    assert is_random(open_features(moved, keys=exported.with_name("keys.parquet")).provenance)  # --keys says
    other = tmp_path / "other.npy"  # a keys.parquet describing an array of another shape says nothing
    np.save(other, alike(N, 16))
    assert "weights" not in open_features(other, keys=exported.with_name("keys.parquet")).provenance


def test_a_sidecar_of_other_bytes_is_ignored_with_a_warning(exported, caplog):
    np.save(exported, alike(seed=1))  # the array replaced, its old sidecar left behind
    exported.with_name("keys.parquet").unlink()
    with caplog.at_level(logging.WARNING):
        fs = open_features(exported)
    assert "weights" not in fs.provenance and "describes another array" in caplog.text


def test_an_export_of_an_export_keeps_the_provenance(exported, tmp_path):
    again = run_export_npy(ExportNpyConfig(features=str(exported), out=str(tmp_path / "again"),
                                           keys=str(exported.with_name("keys.parquet")), progress=False)).record
    fs = open_features(again["emb"])
    assert is_random(fs.provenance) and fs.provenance["model"] == "vit_test"
    assert fs.provenance["origin"]["fingerprint"] == open_features(exported.parents[1] / "root").provenance[
        "fingerprint"]


# ------------------------------------------------------------------------------------------------ dedup
@pytest.mark.skipif(shutil.which("make") is None, reason="make is absent")
def test_make_dedup_on_an_export_of_random_weights_compares_nothing_says_why_and_exits_0(exported):
    """Issue 25, bug 5: this grouped 39 of 40 unrelated images without a word, then raised AttributeError."""
    proc = subprocess.run(["make", "-s", "-o", ".venv/.installed", "dedup", f"FEATURES={exported}",
                           "ARGS=--no-progress"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    why = [line for line in proc.stderr.splitlines() if "nothing was compared" in line]
    assert len(why) == 1 and "random weights" in why[0] and "--embedding" in why[0], proc.stderr
    assert f"dedup: {N} images, 0 groups of copies, 0 duplicates" in proc.stdout
    assert "weights: random" in proc.stdout and "embedding 0 edges (skipped: random weights)" in proc.stdout
    dedup = exported.with_name("emb.npy.dinocurate") / "dedup"
    groups = pq.read_table(dedup / "groups.parquet")
    assert groups.num_rows == N and all(groups.column("keep").to_pylist())
    summary = json.loads((dedup / "summary.json").read_text())
    assert summary["stages"]["embedding"] == {"edges": 0, "skipped": "random weights"} and "warning" not in summary


def test_the_same_with_keys_and_embedding_asked_for_by_name(exported, capsys, caplog):
    keys = str(exported.with_name("keys.parquet"))
    with caplog.at_level(logging.WARNING):
        code, out, err = dedup_cli(["--features", str(exported), "--keys", keys], capsys)
    assert code == 0 and f"dedup: {N} images, 0 groups of copies" in out
    assert len([r for r in caplog.records if "nothing was compared" in r.getMessage()]) == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        code, out, err = dedup_cli(["--features", str(exported), "--keys", keys, "--embedding"], capsys)
    assert code == 0, err
    summary = json.loads((exported.with_name("emb.npy.dinocurate") / "dedup" / "summary.json").read_text())
    assert summary["stages"]["embedding"]["edges"] > 0 and summary["largest_component"] == N
    assert "one component holds 40 of 40 images" in summary["warning"] and "WARNING: one component" in out
    assert "mean nothing" in caplog.text  # asked for by name, still said
    code, out, err = dedup_cli(["--features", str(exported), "--no-embedding"], capsys)
    assert code == 0 and "0 groups of copies" in out and "(skipped: disabled)" in out


def test_a_plain_npy_prints_its_summary_and_sweep_without_provenance(tmp_path, capsys):
    """No sidecar, no model, no weights: the summary says so instead of raising."""
    x = alike(seed=2)
    x[7] = x[3] + 1e-3
    np.save(tmp_path / "emb.npy", x.astype(np.float16))
    code, out, err = dedup_cli(["--features", str(tmp_path / "emb.npy"), "--threshold", "0.999"], capsys)
    assert code == 0, err
    assert "weights: unknown" in out and "1 groups of copies" in out and out.rstrip().endswith("summary.json")
    code, out, err = dedup_cli(["--features", str(tmp_path / "emb.npy"), "--sweep", "0.999,0.99"], capsys)
    assert code == 0, err
    assert "embedding edges only" in out and "sweep.parquet" in out


def test_a_sweep_on_random_weights_via_npy_is_one_line(exported, capsys):
    code, out, err = dedup_cli(["--features", str(exported), "--sweep", "0.9,0.8"], capsys)
    assert code == 2 and err.startswith("error: --sweep") and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------------ other stages
def test_curate_and_evaluate_see_random_weights_through_the_npy(exported, tmp_path):
    from pipeline.curate.retrieval import CurateConfig, run_curate
    from pipeline.evaluate.run import EvalConfig, run_evaluate

    summary = run_curate(CurateConfig(pool=str(exported), balanced=10, out=str(tmp_path / "c"), progress=False))
    assert any("random weights" in note for note in summary.record["notes"])
    results = run_evaluate(EvalConfig(features=(str(exported),), keys=str(exported.with_name("keys.parquet")),
                                      ks=(5,), linear=False, out=str(tmp_path / "ev")))
    assert "random weights" in results.record["runs"][0]["note"]


def test_dedup_library_on_the_npy_matches_the_root(exported):
    """Through the .npy as on the root: random weights, the embedding stage off."""
    on_npy = run_dedup(DedupConfig(features=str(exported), progress=False)).record
    on_root = run_dedup(DedupConfig(features=str(exported.parents[1] / "root"), progress=False)).record
    assert on_npy["stages"]["embedding"]["skipped"] == on_root["stages"]["embedding"]["skipped"] == "random weights"
    assert on_npy["weights"] == on_root["weights"] and on_npy["removed"] == on_root["removed"] == 0
