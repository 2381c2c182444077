"""The outlier score: each image's mean cosine similarity to its k nearest neighbours in the k-NN graph.

Low means few close neighbours (an outlier); high, a dense neighbourhood (often near-copies). It is computed when
asked (`--where 'outlier > 0.3'`, the report's quality section) from a finished graph of the same features:
`make knn`'s OUT/knn first, then the one dedup built in OUT/dedup/knn. Nothing is written.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pipeline.index.knn import complete_graph, iter_parts
from pipeline.layout import KNN_DIR, OutputRoot, read_graph_record
from pipeline.roots.features import FeatureSet

log = logging.getLogger(__name__)

OUTLIER = "outlier"  # the column name --where and the report use
# IVF searches that find fewer than k leave Faiss's sentinel score (-3.4e38) beside a -1 id; below this is absent.
_ABSENT = -1e30


def find_graph(fs: FeatureSet) -> Path | None:
    """A finished k-NN graph of exactly these features (any feature kind and k), or None."""
    root = OutputRoot(fs.root)
    for folder in (root.knn_dir, root.dedup_dir / KNN_DIR):
        record = read_graph_record(folder)
        if record and complete_graph(folder, fs, record.get("feature"), record.get("k")):
            return folder
    return None


def outlier_scores(graph: str | Path, count: int) -> np.ndarray:
    """float32 (count,): mean similarity to the neighbours each row has in the graph (-1 ids and sentinel
    scores left out; the graph's own scores: exact cosine for a Flat index); NaN for a row with none."""
    out = np.full(count, np.nan, np.float32)
    for ids, neighbours, sims in iter_parts(graph):
        present = (neighbours >= 0) & np.isfinite(sims) & (sims > _ABSENT)
        n = present.sum(axis=1)
        total = np.where(present, sims, 0.0).sum(axis=1, dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[ids] = np.where(n > 0, total / np.maximum(n, 1), np.nan)
    return out


def read_outlier(fs: FeatureSet) -> np.ndarray | None:
    """The outlier score of every row of `fs` (id order) from its graph, or None when it has no finished graph."""
    graph = find_graph(fs)
    if graph is None:
        return None
    log.info("outlier scores from the k-NN graph in %s", graph)
    return outlier_scores(graph, fs.count)
