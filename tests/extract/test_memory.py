"""Peak memory of extraction stays flat as the number of shards grows (stream, never accumulate)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY_KWARGS, TINY_MODEL, write_shards

REPO = Path(__file__).resolve().parents[2]
RUNNER = """
import resource, runpy, sys
sys.argv = ["jobs.extract"] + sys.argv[1:]
try:
    runpy.run_module("jobs.extract", run_name="__main__")
except SystemExit as exit:
    assert not exit.code, exit.code
print("MAXRSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_rss_kb(shards: list[str], out: Path) -> int:
    cmd = [sys.executable, "-c", RUNNER, "--shards", *shards, "--out", str(out), "--weights", "random",
           "--model", TINY_MODEL, "--resolution", "224", "--workers", "0", "--no-progress",
           "--model-kwargs", ",".join(f"{k}={v}" for k, v in TINY_KWARGS), "--batch-size", "8",
           "--log-level", "WARNING"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return int(proc.stdout.split("MAXRSS_KB")[1].split()[0])


@pytest.mark.slow  # two 320-image extractions at 224 px in subprocesses: ~12 s
def test_peak_rss_over_2_and_8_shards_differs_little(tmp_path):
    shards, keys = write_shards(tmp_path / "shards", 8, 40)  # 320 images, ~1.6 MB of JPEG bytes in all
    two = peak_rss_kb(shards[:2], tmp_path / "out2")
    eight = peak_rss_kb(shards, tmp_path / "out8")
    # At 224 px each image is a 150 kB uint8 tensor: holding the 240 extra images' tensors would add ~36 MB,
    # their features ~60 kB. Allocator noise between two such runs stays well under 16 MB.
    print(f"peak RSS: 2 shards {two} kB, 8 shards {eight} kB")
    assert abs(eight - two) < 16 * 1024, f"peak RSS 2 shards {two} kB, 8 shards {eight} kB"
