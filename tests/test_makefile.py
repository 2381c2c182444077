"""The Makefile as the front door: quoted paths, ARGS=--help without the required variables, and no stage
writing into the repository's own out/ by default (issue 12, item 16)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is absent")


def make(*args: str, dry: bool = True) -> subprocess.CompletedProcess:
    # -o: take the venv stamp as up to date (no install from a test)
    cmd = ["make", "-s", "-o", ".venv/.installed", *(["-n"] if dry else []), *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("target, variables, expect", [
    ("extract", ["IMAGES=my photos", "OUT=out dir/x"], "--images 'my photos' --out 'out dir/x'"),
    ("pack", ["IMAGES=my photos", "OUT=shards dir"], "--images 'my photos' --out 'shards dir'"),
    ("demo", ["OUT=demo dir"], "--out 'demo dir'"),
    ("pca", ["IMAGES=my photos", "OUT=pca dir"], "--images 'my photos' --out 'pca dir'"),
    ("export", ["SELECTION=sel.parquet", "OUT=export dir"], "--selection 'sel.parquet' --out 'export dir'"),
    ("dedup", ["IMAGES=my photos", "OUT=out dir"], "--images 'my photos' --out 'out dir'"),
    ("apply", ["OUT=out dir"], "--out 'out dir'"),
    ("apply", ["UNDO=out dir/apply/m.parquet"], "--undo 'out dir/apply/m.parquet'"),
])
def test_paths_with_spaces_are_quoted(target, variables, expect):
    proc = make(target, *variables)
    assert proc.returncode == 0, proc.stderr
    assert expect in proc.stdout


@pytest.mark.parametrize("target", ["extract", "pack", "index", "search", "knn", "dedup", "apply", "curate",
                                    "export", "evaluate", "report", "pca"])
def test_args_help_needs_no_inputs(target):
    proc = make(target, "ARGS=--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith(f"-m jobs.{target} --help")


@pytest.mark.parametrize("target, variables", [
    ("extract", ["SHARDS=x.tar"]), ("pack", ["IMAGES=photos"]), ("export", ["SELECTION=sel.parquet"]),
    ("dedup", ["IMAGES=photos"]),
])
def test_stages_that_create_an_output_need_out(target, variables):
    proc = make(target, *variables, dry=False)
    assert proc.returncode == 2
    assert "usage: make" in proc.stdout and "OUT=" in proc.stdout


def test_defaults_for_demo_and_pca_stay_out_of_out():
    assert "--out 'demo_out'" in make("demo").stdout
    assert "--out 'pca_out'" in make("pca", "IMAGES=p").stdout


@pytest.mark.parametrize("target, variables, expect", [
    ("dedup", ["FEATURES=my feats", "OUT=alt dir"], "--features 'my feats' --out 'alt dir'"),
    ("index", ["FEATURES=my feats", "OUT=alt dir"], "--features 'my feats' --out 'alt dir/index'"),
    ("knn", ["FEATURES=my feats", "OUT=alt dir"], "--features 'my feats' --out 'alt dir/knn'"),
    ("curate", ["POOL=my pool", "OUT=alt dir"], "--pool 'my pool' --out 'alt dir/curate'"),
    ("evaluate", ["FEATURES=my feats", "OUT=alt dir"], "--features 'my feats' --out 'alt dir/eval'"),
])
def test_out_with_features_is_passed_on_quoted(target, variables, expect):
    """Issue 25, bug 4: OUT given with FEATURES was dropped, and the stage rewrote the FEATURES root."""
    proc = make(target, *variables)
    assert proc.returncode == 0, proc.stderr
    assert expect in " ".join(proc.stdout.split())


@pytest.mark.parametrize("target", ["dedup", "index", "knn", "curate", "evaluate"])
def test_without_out_no_out_is_passed(target):
    proc = make(target, "FEATURES=f")
    assert proc.returncode == 0, proc.stderr
    assert "--out" not in proc.stdout
