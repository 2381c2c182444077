"""Stored vectors of the indexed images by id, for queries by key or id: a memory-mapped copy beside the index.

A query by key must use the vector `make search` uses for that image (the one in its feature file), but a
Parquet list column decodes a whole row group at a time (~0.1 s for 10,000 rows of 384 float16), and Faiss
gives back the exact vector only for exact indexes (and crashes reconstructing from a loaded fast-scan one).
So the server copies the stored values once, in id order, into `<index>/vectors-<feature>-<digest>.npy`
(named by the index's ids, feature and fingerprint: another index or feature gets another file) and maps it:
a query reads its one row, normalised exactly as `pipeline.roots.features.to_matrix` normalises it.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline.errors import InputError, MissingInputError
from pipeline.io.files import atomic_write
from pipeline.io.schema import read_provenance
from pipeline.layout import IDS, OutputRoot, index_vectors_path
from pipeline.provenance import carries
from pipeline.roots.features import feature_columns, to_matrix
from pipeline.serve.engine import ServedIndex

log = logging.getLogger(__name__)


def vectors_digest(index: ServedIndex) -> str:
    """What the copy depends on: the index's ids (ids.parquet bytes), feature and fingerprint."""
    h = hashlib.sha256(f"{index.provenance['fingerprint']}\0{index.feature}\0".encode())
    h.update((index.folder / IDS).read_bytes())
    return h.hexdigest()[:16]


class StoredVectors:
    """The raw stored feature values of every indexed image, id order, memory-mapped; built when absent."""

    def __init__(self, index: ServedIndex, root: str, progress: bool = True) -> None:
        self.feature = index.feature
        self.columns = feature_columns(index.feature)
        self.layout = OutputRoot(root)
        self.fingerprint = index.provenance["fingerprint"]
        first = next(iter(index.shard_runs), None)
        schema = pq.read_schema(self._feature_file(first)) if first is not None else None
        self.widths = [schema.field(c).type.list_size for c in self.columns] if schema else [1] * len(self.columns)
        self.dtype = np.float16 if schema is None or schema.field(self.columns[0]).type.value_type == pa.float16() \
            else np.float32
        self.path = index_vectors_path(index.folder, index.feature, vectors_digest(index))
        if not self.path.exists():
            self.path = self._write(index, progress)
        self.matrix = np.load(self.path, mmap_mode="r")
        if self.matrix.shape != (index.count, sum(self.widths)):
            raise InputError(f"{self.path} does not hold {index.count} vectors of {sum(self.widths)} values: "
                             f"remove it and restart the server")

    def _write(self, index: ServedIndex, progress: bool) -> Path:
        """Build the copy beside the index, or, where the index folder cannot be written (read-only, shared), in
        the temporary folder; returns where it is."""
        try:
            for stale in self.path.parent.glob(index_vectors_path(index.folder, index.feature, "*").name):
                stale.unlink()  # a copy for ids that are gone: a cache, not data
            atomic_write(self.path, lambda tmp: self._build(index, tmp, progress))
            return self.path
        except (InputError, PermissionError) as exc:
            fallback = Path(tempfile.gettempdir()) / "dinocurate-serve" / self.path.name
            log.warning("cannot write %s (%s): the stored vectors go to %s", self.path, exc, fallback)
            if not fallback.exists():
                atomic_write(fallback, lambda tmp: self._build(index, tmp, progress))
            return fallback

    def vector(self, id_: int) -> np.ndarray:
        """The (D,) float32 normalised query vector of an indexed image."""
        raw = np.asarray(self.matrix[id_])
        arrays, at = [], 0
        for width in self.widths:
            arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(raw[at:at + width]), width))
            at += width
        return to_matrix(pa.RecordBatch.from_arrays(arrays, names=self.columns), self.feature)[0]

    def _feature_file(self, shard: str):
        path = self.layout.feature_path(shard)
        if not path.is_file():
            raise MissingInputError(f"no feature file for shard {shard!r} in {self.layout.features}: the stored "
                                    f"vectors of the index are gone (queries by key need them)")
        if not carries(read_provenance(path), self.fingerprint):
            raise InputError(f"{path} was made with other settings than the index: rebuild the index")
        return path

    def _build(self, index: ServedIndex, tmp: str, progress: bool) -> None:
        """One pass over the feature files of the indexed shards, each checked row for row against ids.parquet."""
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=self.dtype, shape=(index.count, sum(self.widths)))
        with tqdm(total=index.count, unit="vec", disable=not progress, desc="serve: stored vectors") as bar:
            for shard, runs in index.shard_runs.items():
                for start, stop in runs:
                    self._copy_shard(index, shard, start, stop, out)
                    bar.update(stop - start)
        out.flush()
        del out

    def _copy_shard(self, index: ServedIndex, shard: str, start: int, stop: int, out: np.ndarray) -> None:
        file = pq.ParquetFile(self._feature_file(shard))
        row = start
        for batch in file.iter_batches(batch_size=8192, columns=["key", "index", *self.columns]):
            end = row + batch.num_rows
            if end > stop or not np.array_equal(batch.column("index").to_numpy(), index.positions[row:end]) \
                    or batch.column("key").to_pylist() != index.keys[row:end].to_pylist():
                raise InputError(f"the feature file of shard {shard} changed since the index was built: rebuild "
                                 f"the index (make index)")
            at = 0
            for name, width in zip(self.columns, self.widths):
                values = batch.column(name).flatten().to_numpy(zero_copy_only=False).reshape(-1, width)
                out[row:end, at:at + width] = values
                at += width
            row = end
        if row != stop:
            raise InputError(f"the feature file of shard {shard} holds {row - start} rows, the index {stop - start}: "
                             f"rebuild the index (make index)")
