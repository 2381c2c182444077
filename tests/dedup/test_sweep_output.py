"""`dedup --sweep` prints its table once (the job prints it; the library logs one line)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.conftest import clustered_vectors, write_feature_root

REPO = Path(__file__).resolve().parents[2]


def test_sweep_table_is_printed_once(tmp_path):
    write_feature_root(tmp_path, clustered_vectors(60, 16, 4).astype(np.float32))
    done = subprocess.run([sys.executable, "-m", "jobs.dedup", "--features", str(tmp_path), "--sweep", "0.9,0.8",
                           "--no-progress"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    both = done.stdout + done.stderr
    assert both.count("largest group") == 1, both
    assert done.stdout.count("largest group") == 1
