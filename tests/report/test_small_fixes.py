"""The report's smaller fixes (issue 26): similarities shown at most 1, file names wrapped at word boundaries
where they can be, the query image in the search section, each image once in the quality rows of a small set,
the histogram legend off the data."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipeline.index.search import write_results
from pipeline.report import plots
from pipeline.report.html import CSS, fmt_similarity
from pipeline.report.quality import extremes
from pipeline.report.run import ReportConfig, run_report


def test_similarity_above_one_is_shown_as_one():
    assert fmt_similarity(1.0006) == "1.000" and fmt_similarity(0.98765) == "0.988" and fmt_similarity(None) == ""


def test_search_section_shows_the_query_image_that_search_out_recorded(searched, tmp_path):
    out, _, table, _ = searched
    results = tmp_path / "results.parquet"
    write_results(table, results, query=str(out))
    run_report(ReportConfig(out=str(out), report=str(tmp_path / "report"), search=str(results)))
    text = (tmp_path / "report" / "index.html").read_text()
    assert 'class="tile query" data-key="k03"' in text  # the query's own image, framed as the query


def test_file_names_wrap_between_words_where_they_can():
    assert "break-all" not in CSS and "figcaption{overflow-wrap:anywhere" in CSS


def test_quality_rows_show_each_image_once_on_a_small_set():
    values = np.array([5.0, 1.0, np.nan, 3.0, 2.0, 4.0])
    low, high = extremes(values, 4)  # 5 finite values < 2 × 4
    assert low.tolist() == [1, 4, 3] and high.tolist() == [0, 5]
    low, high = extremes(values, 2)  # enough: the two ends
    assert low.tolist() == [1, 4] and high.tolist() == [0, 5]
    low, high = extremes(np.array([7.0]), 3)
    assert low.tolist() == [0] and high.tolist() == []


def test_histogram_legend_sits_outside_the_axes(monkeypatch, tmp_path):
    made = []

    def figure(width, height):
        made.append(real(width, height))
        return made[-1]

    real = plots._figure
    monkeypatch.setattr(plots, "_figure", figure)
    rng = np.random.default_rng(0)
    sims = np.concatenate([rng.uniform(0.9, 1.0, 60), [np.nan] * 40])
    reasons = ["embedding"] * 30 + ["keep"] * 30 + ["unique"] * 40
    groups = pa.table({"nearest_similarity": pa.array(sims, pa.float32()), "reason": reasons})
    plots.plot_similarities(groups, 0.95, "", tmp_path / "h.png", knn_nearest=rng.uniform(0.3, 1.0, 100))
    fig = made[0]
    renderer = fig._get_renderer()  # laid out by savefig (constrained layout)
    axes = fig.axes[0].get_window_extent(renderer)
    legends = fig.legends + [a.get_legend() for a in fig.axes if a.get_legend()]
    assert len(legends) == 1
    box = legends[0].get_window_extent(renderer)
    assert not box.overlaps(axes), (box, axes)
    assert (tmp_path / "h.png").stat().st_size > 0
