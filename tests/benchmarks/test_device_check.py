"""benchmarks/device_check.py: the CPU smoke run's JSON, and its wheel-folder installer on a wheel built here."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "device_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("device_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[dict, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("device_check")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--cpu", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "device_check.json").read_text()), proc


def test_cpu_smoke_run_measures_every_check(smoke):
    result, proc = smoke
    assert json.loads(proc.stdout) == result  # the JSON printed is the JSON written
    assert "feature parity PASS, decode pixel parity PASS" in proc.stderr
    assert "random weights" in result["model"]["weights"]
    assert result["device"]["device"] == "cpu" and result["device"]["name"]
    assert result["shards"]["images"] == 64
    speeds = result["backbone_images_per_second"]
    assert "fp32" in speeds and set(speeds) <= {"fp32", "bf16"}
    assert ("bf16" in speeds) != bool(result["backbone_not_timed"])
    assert all(v > 0 for by_size in speeds.values() for v in by_size.values())
    assert set(speeds["fp32"]) == {"4", "16"}
    e2e = result["end_to_end_cpu_decode"]
    assert e2e["images"] == 64 and e2e["failures"] == 0 and e2e["images_per_second"] > 0 and e2e["workers"] >= 0
    gpu = result["end_to_end_gpu_decode"]  # the device decode path, run on the CPU device here
    assert gpu["decode"] == "gpu" and gpu["images"] == 64 and gpu["failures"] == 0
    assert result["reasons"]["end_to_end_gpu_decode"].startswith("no GPU")
    pixels = result["decode_pixel_parity"]
    assert pixels["pass"] is True and pixels["images"] == 16
    assert pixels["no_draft"]["pixels"]["max"] <= 3 and pixels["draft"]["phash_bits"]["max"] <= 4
    parity = result["parity"]
    assert parity["pass"] is True and parity["images"] == 16
    assert {r["pair"] for r in parity["rows"]} >= {"cpu fp32 vs cpu fp32"}
    assert all(r["pass"] and r["cosine_min"] > 0.999 for r in parity["rows"])
    index = result["index"]
    assert index["vectors"] == 64 and index["dim"] == 64 and index["graph_k"] == 10
    assert index["index_seconds"] >= 0 and index["graph_seconds"] >= 0


def test_cpu_smoke_run_gives_a_reason_for_every_null(smoke):
    result, _ = smoke
    nulls = {k for k, v in result.items() if v is None}
    assert nulls == {"peak_gpu_memory_gib", "gpu_busy_share", "wheels"}
    assert nulls <= set(result["reasons"]) and all(result["reasons"][k] for k in nulls)
    assert "decode_pixel_parity" not in result["reasons"]  # measured on the CPU too


def test_wheel_folder_installs_what_is_missing_into_the_target(tmp_path, monkeypatch):
    package = tmp_path / "pkg"
    (package / "dc_tiny_pkg").mkdir(parents=True)
    (package / "dc_tiny_pkg" / "__init__.py").write_text("VALUE = 42\n")
    (package / "pyproject.toml").write_text('[build-system]\nrequires = ["setuptools"]\n'
                                            'build-backend = "setuptools.build_meta"\n')
    (package / "setup.py").write_text("from setuptools import setup\n"
                                      "setup(name='dc-tiny-pkg', version='0.1', packages=['dc_tiny_pkg'])\n")
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "-w", str(wheels), str(package)], check=True, capture_output=True)
    monkeypatch.setattr(sys, "path", list(sys.path))
    target = tmp_path / "target"
    got = load_script().install_wheels(wheels, {"dc_tiny_pkg": "dc-tiny-pkg==0.1", "json": "json==0"}, target)
    assert got == {"target": str(target), "installed": ["dc-tiny-pkg==0.1"], "present": ["json==0"]}
    assert (target / "dc_tiny_pkg" / "__init__.py").is_file() and sys.path[0] == str(target)
    try:
        import dc_tiny_pkg

        assert dc_tiny_pkg.VALUE == 42 and Path(dc_tiny_pkg.__file__).is_relative_to(target)
    finally:
        sys.modules.pop("dc_tiny_pkg", None)
