"""The index the server holds: loaded once (memory-mapped where Faiss can), ids by key or (shard, index), top-k."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.errors import InputError, MissingInputError
from pipeline.index.base import set_search_params
from pipeline.index.build import search
from pipeline.layout import IDS, INDEX_FILE, read_index_record, resolve_index_dir
from pipeline.roots.features import shown_similarity

log = logging.getLogger(__name__)

# Faiss's read flags, most memory-saving first: in-place mapping of the codes, then mapped inverted lists.
MMAP_FLAGS = ("IO_FLAG_MMAP_IFC", "IO_FLAG_MMAP")


@dataclass(frozen=True)
class Hit:
    """One neighbour: its rank (1-based), §7 id, key, where it comes from, and the index's similarity."""

    rank: int
    id: int
    key: str
    shard: str
    index: int
    similarity: float


def read_index_mapped(path: Path, mmap: bool = True) -> tuple[faiss.Index, str]:
    """The Faiss index at `path`, memory-mapped read-only where Faiss supports it for this index type (pages are
    read as searches touch them, so an index larger than RAM serves); otherwise read into memory. Returns the
    index and how it was loaded."""
    if mmap:
        for name in MMAP_FLAGS:
            flag = getattr(faiss, name, None)
            if flag is None:
                continue
            try:
                return faiss.read_index(str(path), flag | faiss.IO_FLAG_READ_ONLY), name
            except RuntimeError as exc:  # this index type cannot be mapped: try the next way
                log.debug("index %s cannot be read with %s: %s", path, name, exc)
    return faiss.read_index(str(path)), "in memory"


class ServedIndex:
    """An index folder as the server holds it: the Faiss index with its search parameters, its `ids.parquet`
    (id → key, shard, index) and `index.json`; looks ids up by key or by (shard, index)."""

    def __init__(self, index_dir: str | os.PathLike, mmap: bool = True) -> None:
        folder = resolve_index_dir(index_dir)
        record = read_index_record(folder)
        if record is None or not (folder / INDEX_FILE).exists():
            raise MissingInputError(f"no index in {folder}: build one with make index FEATURES=...")
        self.folder, self.record = folder, record
        self.index, self.loading = read_index_mapped(folder / INDEX_FILE, mmap)
        set_search_params(self.index, record.get("nprobe"), record.get("ef_search", 128), record.get("k_factor", 32))
        ids = pq.read_table(folder / IDS, columns=["id", "key", "shard", "index"]).combine_chunks()
        if ids.num_rows != self.index.ntotal or not np.array_equal(ids.column("id").to_numpy(),
                                                                   np.arange(ids.num_rows)):
            raise InputError(f"{folder}: {IDS} does not hold ids 0..{self.index.ntotal - 1} in order; rebuild "
                             f"the index (make index)")
        self.keys: pa.Array = _array(ids.column("key"))
        encoded = _array(pc.dictionary_encode(ids.column("shard")))
        self.shard_names: list[str] = encoded.dictionary.to_pylist() if ids.num_rows else []
        self.shard_codes = encoded.indices.to_numpy(zero_copy_only=False) if ids.num_rows else np.zeros(0, np.int32)
        self.positions = ids.column("index").to_numpy()
        self.shard_runs = _runs(self.shard_codes, self.shard_names)
        hashes = np.fromiter(map(hash, self.keys.to_pylist()), np.int64, ids.num_rows)
        self.key_order = np.argsort(hashes, kind="stable")
        self.key_hashes = hashes[self.key_order]
        log.info("index %s: %d vectors, %s (%s)", folder, self.count, record.get("factory"), self.loading)

    @property
    def count(self) -> int:
        return int(self.index.ntotal)

    @property
    def feature(self) -> str:
        return self.record["feature"]

    @property
    def provenance(self) -> dict:
        return self.record["provenance"]

    def row(self, id_: int) -> tuple[str, str, int]:
        """(key, shard, index) of an id; IndexError when the index holds no such id."""
        if not 0 <= id_ < self.count:
            raise IndexError(f"id {id_} is not in the index (0 to {self.count - 1})")
        return self.keys[id_].as_py(), self.shard_names[self.shard_codes[id_]], int(self.positions[id_])

    def ids_of_key(self, key: str) -> list[int]:
        """Every id whose key is `key` (keys are unique in most roots; two shards may share one)."""
        h = hash(key)
        lo, hi = np.searchsorted(self.key_hashes, h, "left"), np.searchsorted(self.key_hashes, h, "right")
        return sorted(int(i) for i in self.key_order[lo:hi] if self.keys[int(i)].as_py() == key)

    def id_at(self, shard: str, index: int, key: str | None = None) -> int | None:
        """The id of the sample at (shard, index) (and with `key`, when given), or None when the index has none."""
        for start, stop in self.shard_runs.get(shard, ()):
            at = start + int(np.searchsorted(self.positions[start:stop], index))
            if at < stop and self.positions[at] == index and (key is None or self.keys[at].as_py() == key):
                return at
        return None

    def search(self, vector: np.ndarray, k: int) -> list[Hit]:
        """Top-k of one normalised float32 vector (as `make search` runs it), absent neighbours left out."""
        sims, ids = search(self.index, np.asarray(vector, np.float32).reshape(1, -1), k)
        hits = []
        for rank, (i, s) in enumerate(zip(ids[0].tolist(), sims[0].tolist())):
            if i >= 0:
                key, shard, index = self.row(i)
                hits.append(Hit(rank + 1, i, key, shard, index, shown_similarity(s)))
        return hits


def _array(column: pa.ChunkedArray) -> pa.Array:
    """One contiguous array (O(1) element access)."""
    if column.num_chunks == 1:
        return column.chunk(0)
    return pa.concat_arrays(column.chunks) if column.num_chunks else pa.array([], column.type)


def _runs(codes: np.ndarray, names: list[str]) -> dict[str, list[tuple[int, int]]]:
    """shard → its [start, stop) id ranges (one range per shard, as §7 ids come in shard order)."""
    runs: dict[str, list[tuple[int, int]]] = {}
    if not len(codes):
        return runs
    cuts = np.flatnonzero(np.diff(codes)) + 1
    starts = np.concatenate([[0], cuts])
    stops = np.concatenate([cuts, [len(codes)]])
    for start, stop in zip(starts.tolist(), stops.tolist()):
        runs.setdefault(names[codes[start]], []).append((start, stop))
    return runs
