"""`--where` over a feature set's rows, and searching an index among the matching rows only.

The columns: the feature files' scalar columns, `id`, and the k-NN `outlier` score (index/outlier.py).
"""

from __future__ import annotations

import logging
import math

import faiss
import numpy as np
import pyarrow as pa

from pipeline.errors import ConfigError
from pipeline.index.build import search
from pipeline.index.outlier import OUTLIER, find_graph, outlier_scores
from pipeline.roots.features import FeatureSet
from pipeline.roots.where import Where, matching_rows, parse_where, read_rows, row_columns

log = logging.getLogger(__name__)


def where_mask(fs: FeatureSet, where: str | Where) -> np.ndarray:
    """bool (fs.count,): the rows the filter keeps. Columns: the feature files' scalar columns (metadata, quality
    signals, kept columns), `id`, and `outlier` when the features have a finished k-NN graph."""
    where = parse_where(where) if isinstance(where, str) else where
    available = row_columns(fs)
    graph = find_graph(fs) if OUTLIER in where.columns else None
    if OUTLIER in where.columns and OUTLIER not in available:
        if graph is None:
            raise ConfigError(f"--where {where.text!r} uses {OUTLIER!r}, the mean similarity to the k nearest "
                              f"neighbours, which needs a finished k-NN graph of {fs.root}: run make knn "
                              f"FEATURES={fs.root} first")
        available = available + [OUTLIER]
    where.expression(available)  # an unknown column: the error lists what there is, before anything is read
    stored = [c for c in where.columns if c != OUTLIER or OUTLIER in row_columns(fs)]
    table = read_rows(fs, stored or ["id"])
    if graph is not None and OUTLIER not in table.column_names:
        table = table.append_column(OUTLIER, pa.array(outlier_scores(graph, fs.count), pa.float32(),
                                                      from_pandas=True))
    mask = np.zeros(fs.count, bool)
    mask[matching_rows(table, where)] = True
    log.info("--where %s: %d of %d rows match", where.text, int(mask.sum()), fs.count)
    return mask


def search_within(index: faiss.Index, queries: np.ndarray, k: int, allowed: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, ids) of each query's k nearest among the ids where `allowed` is true, in the index's order
    (-1 / -inf where fewer exist). Searches k / share × 1.5 first, then twice as many for the queries still short,
    up to the whole index: any index type, no ID selector needed."""
    n, total = int(allowed.sum()), int(index.ntotal)
    sims = np.full((len(queries), k), -np.inf, np.float32)
    ids = np.full((len(queries), k), -1, np.int64)
    if n == 0 or total == 0 or len(queries) == 0:
        return sims, ids
    want = min(k, n)
    todo = np.arange(len(queries))
    fetch = min(total, math.ceil(k * total / n * 1.5) + k)
    while len(todo):
        got_sims, got_ids = search(index, np.ascontiguousarray(queries[todo]), fetch)
        ok = (got_ids >= 0) & allowed[np.clip(got_ids, 0, None)]
        done = (ok.sum(axis=1) >= want) | (fetch >= total)
        rows = np.flatnonzero(done)
        order = np.argsort(~ok[rows], axis=1, kind="stable")[:, :k]  # matching hits first, in rank order
        take_ok = np.take_along_axis(ok[rows], order, axis=1)
        width = order.shape[1]  # < k only when the whole index holds fewer than k
        sims[todo[rows], :width] = np.where(take_ok, np.take_along_axis(got_sims[rows], order, axis=1), -np.inf)
        ids[todo[rows], :width] = np.where(take_ok, np.take_along_axis(got_ids[rows], order, axis=1), -1)
        todo = todo[~done]
        fetch = min(total, fetch * 2)
    return sims, ids
