"""The report's quality section: for each quality signal, the images with the lowest and the highest values.

Shown when the feature files hold the `--extras stats` columns; the k-NN `outlier` score joins them when the root
has a finished graph. Each row is sorted by value, ties by id; rows without a value (NaN, null) are left out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow.parquet as pq

from pipeline.index.outlier import OUTLIER, read_outlier
from pipeline.io.stats import STATS_COLUMNS, STATS_DEFINITION
from pipeline.layout import OutputRoot
from pipeline.report.html import esc, tile
from pipeline.roots.features import open_features
from pipeline.roots.where import read_rows

if TYPE_CHECKING:
    from pipeline.report.run import Report

_BOX = "background:#fff;border:1px solid #ddd;margin:10px 0;padding:6px 8px"  # as the other sections' boxes
OUTLIER_DEFINITION = ("mean cosine similarity to the k nearest neighbours in the k-NN graph (low = an outlier, "
                      "high = a dense neighbourhood, often near-copies)")


def has_quality(root: OutputRoot) -> bool:
    """The root's feature files hold the quality signals (`--extras stats`)."""
    files = root.feature_files()
    return bool(files) and STATS_COLUMNS[0] in pq.read_schema(files[0]).names


def extremes(values: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids of the n lowest, ids of the n highest) finite values: lowest first / highest first, ties by id.
    Fewer than 2n values: the lower half and the upper half, so that no image is shown in both rows."""
    ids = np.flatnonzero(np.isfinite(values))
    v = values[ids]
    low = ids[np.lexsort((ids, v))][:min(n, -(-len(ids) // 2))]
    high = ids[np.lexsort((ids, -v))]
    return low, high[~np.isin(high, low)][:n]


def quality_section(rep: Report, root: OutputRoot) -> None:
    """Per signal: a row of the lowest and a row of the highest images, their values under them."""
    fs = open_features(root.root)
    signals = [c for c in STATS_COLUMNS if c in fs.columns()]
    table = read_rows(fs, ["key", "shard", "index", *signals])
    values = {s: table.column(s).to_numpy(zero_copy_only=False).astype(np.float64) for s in signals}
    definitions = dict(STATS_DEFINITION, **(fs.provenance.get("stats") or {}))
    outlier = read_outlier(fs)
    if outlier is not None:
        signals.append(OUTLIER)
        values[OUTLIER] = outlier.astype(np.float64)
        definitions[OUTLIER] = OUTLIER_DEFINITION
    n = rep.cfg.quality_per_row
    keys, shards, index = (table.column(c).to_pylist() for c in ("key", "shard", "index"))
    page = rep.index
    page.add('<section id="quality"><h2>Quality</h2>')
    page.add(f"<p>For each signal, the {n} images with the lowest and the {n} with the highest value (ties by id; "
             f"with fewer than {2 * n} images, the lower and the upper half: each image once). "
             f"Working image: {esc(definitions.get('working_image', ''))}.</p>")
    for signal in signals:
        low, high = extremes(values[signal], n)
        page.add(f'<div class="signal" data-signal="{esc(signal)}" style="{_BOX}">'
                 f'<div class="ghead">{esc(signal)}</div><p>{esc(definitions.get(signal, ""))}</p>')
        for end, ids in (("lowest", low), ("highest", high)):
            page.add(f'<div>{end}</div><div class="tiles" data-end="{end}">')
            for i in ids.tolist():
                thumb = rep.thumbs.want(rep.source, keys[i], shards[i], index[i])
                page.add(*tile(thumb, f"{values[signal][i]:.4g}<br>{esc(keys[i])}"))
            page.add("</div>")
        page.add("</div>")
    rep.info["quality"] = {"signals": signals, "per_row": n, "images": fs.count}
    page.add("</section>")
