"""Rows to cluster: an array (float16, float32, memory-mapped) or feature files streamed; float32 a chunk at a time."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from pipeline.roots.features import FeatureSet, feature_columns, iter_batches, to_matrix

CHUNK_ROWS = 65536  # rows converted to float32 at once when streaming


@dataclass(frozen=True)
class ArraySource:
    """Rows of an (N, D) array of any float dtype; only the rows asked for are copied to float32."""

    x: np.ndarray
    chunk_rows: int = CHUNK_ROWS

    @property
    def count(self) -> int:
        return len(self.x)

    def chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        """(first row id, float32 rows) in id order."""
        for s in range(0, len(self.x), self.chunk_rows):
            yield s, np.ascontiguousarray(self.x[s:s + self.chunk_rows], dtype=np.float32)

    def take(self, ids: np.ndarray) -> np.ndarray:
        """float32 rows `ids` (in that order)."""
        return np.ascontiguousarray(self.x[np.asarray(ids, dtype=np.int64)], dtype=np.float32)


@dataclass(frozen=True)
class FeatureSource:
    """Normalised rows of a feature set (or of its rows `subset`, sorted pool ids: row i here = subset[i]), read
    from its files on every pass; nothing is held between passes."""

    features: FeatureSet
    feature: str = "cls"
    subset: np.ndarray | None = None
    chunk_rows: int = CHUNK_ROWS

    @property
    def count(self) -> int:
        return self.features.count if self.subset is None else len(self.subset)

    def chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        start = pool_end = 0  # row number here; pool ids read so far
        for batch in iter_batches(self.features, feature_columns(self.feature), self.chunk_rows):
            rows = to_matrix(batch, self.feature)
            first, pool_end = pool_end, pool_end + len(rows)
            if self.subset is not None:
                lo, hi = np.searchsorted(self.subset, [first, pool_end])
                rows = rows[self.subset[lo:hi] - first]
            if len(rows):
                yield start, rows
            start += len(rows)

    def take(self, ids: np.ndarray) -> np.ndarray:
        """float32 rows `ids` (in that order), gathered in one pass over the files."""
        ids = np.asarray(ids, dtype=np.int64)
        order = np.argsort(ids, kind="stable")
        wanted = ids[order]
        out = np.empty((len(ids), self.features.dim(self.feature)), np.float32)
        for start, rows in self.chunks():
            lo, hi = np.searchsorted(wanted, [start, start + len(rows)])
            if hi > lo:
                out[order[lo:hi]] = rows[wanted[lo:hi] - start]
            if hi == len(wanted):
                break
        return out


VectorSource = ArraySource | FeatureSource
