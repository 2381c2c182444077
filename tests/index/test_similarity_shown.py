"""Similarities people read are at most 1: unit vectors stored as float16 round, and an image against its own
copy scored 1.0003 (pipeline/roots/features.py `shown_similarity`; search output, dedup, the report, serve)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.index.build import IndexConfig, build_index
from pipeline.index.search import format_results, run_search
from pipeline.roots.features import shown_similarity
from tests.conftest import write_feature_root


def over_one_root(root: Path, n: int = 40, d: int = 64) -> np.ndarray:
    """A float16 root whose rows 0 and 1 are one unit vector that float16 rounds to a norm above 1."""
    rng = np.random.default_rng(0)
    candidates = rng.normal(size=(2000, d))
    candidates /= np.linalg.norm(candidates, axis=1, keepdims=True)
    half = candidates.astype(np.float16).astype(np.float32)
    worst = candidates[int(np.argmax((half * half).sum(1)))]
    assert float(worst.astype(np.float16).astype(np.float32) @ worst.astype(np.float16).astype(np.float32)) > 1.0002
    x = rng.normal(size=(n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x[0] = x[1] = worst
    write_feature_root(root, x.astype(np.float32), dtype="float16")
    return x


def test_shown_similarity_clips_at_one():
    assert shown_similarity(1.000049) == 1.0 and shown_similarity(0.5) == 0.5
    out = shown_similarity(np.array([1.0003, 0.2, np.nan], np.float32))
    assert out.dtype == np.float32 and out[0] == 1.0 and out[1] == np.float32(0.2) and np.isnan(out[2])


def test_search_results_never_exceed_one(tmp_path):
    over_one_root(tmp_path)
    build_index(IndexConfig(features=str(tmp_path), progress=False))
    table = run_search(str(tmp_path), str(tmp_path), k=3)
    sims = table.column("similarity").to_pylist()
    assert max(sims) == 1.0
    assert "1.0000" in format_results(table) and "1.000" + "3" not in format_results(table)
