"""`--where` on the command line of dedup, export and curate: a hostile expression is one line, exit 2."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from jobs import curate as curate_job
from jobs import dedup as dedup_job
from jobs import export as export_job
from tests.conftest import clustered_vectors, write_feature_root


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("where_cli") / "out"
    write_feature_root(root, clustered_vectors(60, 16, 3), pixels=np.arange(60))
    return root


def exit_code(job, argv: list[str]) -> int:
    with pytest.raises(SystemExit) as info:
        job.main(argv)
    return info.value.code


@pytest.mark.parametrize("job,argv", [
    (dedup_job, ["--features", "{root}"]),
    (curate_job, ["--pool", "{root}", "--balanced", "5"]),
    (export_job, ["--selection", "{root}/curate/selected.parquet", "--out", "{root}/x", "--features", "{root}"]),
])
def test_a_hostile_where_is_a_one_line_parse_error(job, argv, root, capsys):
    args = [a.format(root=root) for a in argv] + ["--where", "__import__('os').system('touch PWNED')"]
    if job is export_job:
        (root / "curate").mkdir(exist_ok=True)
        pd.DataFrame({"key": ["img000001"], "shard": ["part-0000"], "index": [1]}).to_parquet(
            root / "curate" / "selected.parquet")
    assert exit_code(job, args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: cannot parse --where") and "function calls not allowed" in err[-1]
    assert "Traceback" not in "\n".join(err) and not (root / "PWNED").exists()


def test_dedup_where_on_the_command_line(root, capsys):
    assert exit_code(dedup_job, ["--features", str(root), "--where", "width >= 20 and key != 'img000030'"]) == 0
    groups = pd.read_parquet(root / "dedup" / "groups.parquet")
    assert sorted(groups[groups.reason == "excluded"].id) == list(range(20)) + [30]
