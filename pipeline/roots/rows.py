"""A feature set's vectors read from its files on demand, by row range or row ids, instead of held all at once."""

from __future__ import annotations

import numpy as np

from pipeline.roots.features import FeatureSet, file_subset, read_matrix


class StreamedRows:
    """The normalised vectors of `fs` as float16, the values `read_matrix(fs, feature, np.float16)` holds, read a
    file at a time when indexed (`rows[a:b]`, `rows[ids]`). The last file read is kept, so a pass in id order
    reads each file once; memory: one file's rows."""

    def __init__(self, fs: FeatureSet, feature: str) -> None:
        self.fs, self.feature = fs, feature
        self.starts = np.cumsum([0, *fs.rows])
        self.shape = (fs.count, fs.dim(feature))
        self.dtype = np.dtype(np.float16)
        self._file: tuple[int, np.ndarray | None] = (-1, None)

    def __len__(self) -> int:
        return self.shape[0]

    def _rows_of(self, f: int) -> np.ndarray:
        if self._file[0] != f:
            self._file = (-1, None)  # the previous file goes before the next is read
            self._file = (f, read_matrix(file_subset(self.fs, [f]), self.feature, dtype=np.float16))
        return self._file[1]

    def __getitem__(self, key: slice | np.ndarray | list[int]) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            rows = np.arange(start, stop, step)
        else:
            rows = np.asarray(key, dtype=np.int64)
        out = np.empty((len(rows), self.shape[1]), np.float16)
        if not len(rows):
            return out
        files = np.searchsorted(self.starts, rows, side="right") - 1
        order = np.argsort(files, kind="stable")
        bounds = np.flatnonzero(np.diff(files[order])) + 1
        for chunk in np.split(order, bounds):
            f = int(files[chunk[0]])
            out[chunk] = self._rows_of(f)[rows[chunk] - self.starts[f]]
        return out
