"""The job entry points as a user meets them: --help, one-line errors, exit codes, the bench code path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY_KWARGS, TINY_MODEL, TINY_RES, make_image, tiny_config, write_shards

REPO = Path(__file__).resolve().parents[1]


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize("job", ["jobs.extract", "jobs.pack", "jobs.demo", "jobs.bench", "jobs.index", "jobs.search",
                                 "jobs.knn", "jobs.dedup", "jobs.curate", "jobs.export", "jobs.evaluate",
                                 "jobs.report", "jobs.pca"])
def test_help_explains(job):
    proc = run(job, "--help")
    assert proc.returncode == 0
    assert "--out" in proc.stdout


def test_extract_help_lists_every_option_with_examples():
    text = run("jobs.extract", "--help").stdout
    for option in ["--shards", "--images", "--weights", "--resolution", "--resize-mode", "--device", "--precision",
                   "--extras", "--dtype", "--workers", "--rank", "--world-size", "--max-pixels", "--model-kwargs"]:
        assert option in text, option
    assert "examples:" in text and "torchrun" in text


def test_missing_hub_weights_is_one_clear_line_and_exit_2(tmp_path):
    make_image(0).save(tmp_path / "a.jpg")
    proc = run("jobs.extract", "--images", str(tmp_path), "--out", str(tmp_path / "out"), "--no-progress",
               env={"HF_HUB_CACHE": str(tmp_path / "empty"), "HF_HOME": str(tmp_path / "empty")})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: no weights for")
    assert "--weights PATH" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "features").exists()


def test_both_or_no_inputs_are_refused(tmp_path):
    proc = run("jobs.extract", "--out", str(tmp_path / "out"), "--weights", "random")
    assert proc.returncode == 2 and "exactly one input" in proc.stderr


def test_pack_cli_writes_shards_and_list(tmp_path):
    (tmp_path / "img").mkdir()
    for i in range(5):
        make_image(i).save(tmp_path / "img" / f"{i}.png")
    proc = run("jobs.pack", "--images", str(tmp_path / "img"), "--out", str(tmp_path / "sh"), "--shard-size", "2")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "sh" / "shards.txt").read_text().split() == [f"shard-00000{i}.tar" for i in range(3)]


def test_bench_code_path_on_a_tiny_model(tmp_path):
    from pipeline.extract.backbone import create_backbone
    from pipeline.bench.throughput import backbone_throughput, end_to_end_throughput

    shards, keys = write_shards(tmp_path / "shards", 2, 3)
    cfg = tiny_config(tmp_path / "unused", shards=tuple(shards))
    alone = backbone_throughput(create_backbone(cfg, torch.device("cpu")), batch_size=2, warmup=1, repeats=2)
    assert set(alone) == {"batch_size", "images_per_second", "p50_ms", "p90_ms", "repeats", "warmup"}
    assert alone["images_per_second"] > 0 and alone["p90_ms"] >= alone["p50_ms"] > 0
    from pipeline.bench.throughput import matmul_gflops

    assert matmul_gflops(n=256, repeats=2) > 0
    e2e = end_to_end_throughput(cfg)
    assert e2e["images"] == len(keys) and e2e["failures"] == 0 and e2e["images_per_second"] > 0
    assert not (tmp_path / "unused").exists()  # the bench never writes into a user's OUT
