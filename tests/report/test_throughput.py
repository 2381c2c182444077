"""The report's throughput curve starts at the run's start, so one slow shard still has a curve (issue 12,
item 14)."""

from __future__ import annotations

import json

from pipeline.extract.runner import run_extract
from pipeline.report.run import ReportConfig, run_report
from tests.conftest import tiny_config, write_shards


def test_one_shard_that_took_a_minute_has_a_curve(tmp_path):
    shards, _ = write_shards(tmp_path / "s", 1, 3)
    run_extract(tiny_config(tmp_path / "out", shards=tuple(shards)))
    marker_path = tmp_path / "out" / "_done" / "train-000000.json"
    marker = json.loads(marker_path.read_text())
    assert marker["finished_unix"] - 5 < marker["run_started_unix"] <= marker["finished_unix"]
    marker["run_started_unix"] = marker["finished_unix"] - 58  # as if the shard had taken 58 s
    marker_path.write_text(json.dumps(marker))
    info = run_report(ReportConfig(out=str(tmp_path / "out"))).record
    html = (tmp_path / "out" / "report" / "index.html").read_text()
    assert "1 shard finished over 58 s since the run&#x27;s start" in html or \
        "1 shard finished over 58 s since the run's start" in html
    assert "no throughput curve" not in html
    assert (tmp_path / "out" / "report" / "throughput.png").stat().st_size > 1000
    assert "extract" in info["sections"]
