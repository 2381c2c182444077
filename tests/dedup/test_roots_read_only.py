"""FEATURES roots are read-only to stages given another --out, and a root is never its own --against or
--reference (issue 25, item 2; bug 4)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from pipeline.dedup.config import DedupConfig
from pipeline.errors import ConfigError
from tests.conftest import clustered_vectors, write_feature_root


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file below root with its size and mtime: what a stage writing there would change."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def run_job(name: str, argv: list[str], capsys) -> tuple[int, str]:
    import importlib

    with pytest.raises(SystemExit) as code:
        importlib.import_module(f"jobs.{name}").main(argv)
    out = capsys.readouterr()
    return code.value.code, out.out + out.err


@pytest.fixture
def root(tmp_path) -> Path:
    vectors = clustered_vectors(120, 16, 6, seed=3)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    write_feature_root(tmp_path / "o", vectors)
    return tmp_path / "o"


def test_dedup_and_index_with_out_leave_the_features_root_untouched(root, tmp_path, capsys):
    """Bug 4: `make dedup FEATURES=o OUT=alt` (and make index) ignored OUT and rewrote o/dedup, o/index."""
    before = snapshot(root)
    alt = tmp_path / "alt"
    code, text = run_job("dedup", ["--features", str(root), "--out", str(alt), "--no-progress"], capsys)
    assert code == 0, text
    assert (alt / "dedup" / "groups.parquet").exists() and (alt / "dedup" / "summary.json").exists()
    assert f"{alt}/dedup/groups.parquet" in text
    code, text = run_job("index", ["--features", str(root), "--out", str(alt / "index"), "--no-progress"], capsys)
    assert code == 0, text
    assert (alt / "index" / "index.faiss").exists()
    assert snapshot(root) == before


def test_without_out_dedup_still_writes_beside_its_features(root, capsys):
    code, text = run_job("dedup", ["--features", str(root), "--no-progress"], capsys)
    assert code == 0, text
    assert (root / "dedup" / "groups.parquet").exists()


@pytest.mark.parametrize("flag", ["against", "reference"])
def test_a_root_is_refused_as_its_own_against_or_reference(root, tmp_path, flag, capsys):
    """Bug 4: `--against o` on FEATURES=o deduplicated the root against itself and wrote into it."""
    link = tmp_path / "link"
    link.symlink_to(root)
    for spelling in (str(root), str(root) + "/", str(link), os.path.relpath(root)):
        with pytest.raises(ConfigError) as err:
            DedupConfig(features=str(root), **{flag: spelling})
        assert str(err.value) == (f"--{flag} {spelling} is FEATURES ({root}) itself: a root is not compared with "
                                  f"itself; give --{flag} another extract output")
    before = snapshot(root)
    code, text = run_job("dedup", ["--features", str(root), f"--{flag}", str(link)], capsys)
    assert code == 2 and text.count("\n") == 1 and text.startswith(f"error: --{flag} {link} is FEATURES")
    assert snapshot(root) == before


def test_an_out_inside_the_against_root_is_refused(root, tmp_path):
    with pytest.raises(ConfigError, match="read-only to this dedup"):
        DedupConfig(features=str(tmp_path / "new"), against=str(root), out=str(root / "dedup"))
