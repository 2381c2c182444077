"""`dinocurate <command> --help` builds its options without loading torch (~3 s): the library modules a
parser imports (the stage's config) keep torch out, and load it where the stage runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Every command whose parser is torch-free; search, bench, parity and demo loaded torch for --help.
QUICK = ("extract", "index", "search", "knn", "dedup", "apply", "curate", "export-npy", "serve", "bench", "parity",
         "demo")

PROBE = """
import sys
from jobs import cli
for command in sys.argv[1:]:
    cli.build_parser(with_options=[command])
    if "torch" in sys.modules:
        print(command)
        break
"""


def test_help_of_these_commands_does_not_import_torch():
    done = subprocess.run([sys.executable, "-c", PROBE, *QUICK], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"`dinocurate {done.stdout.strip()} --help` imports torch"
