"""All-vs-all k-NN graph over an index, in batches, written as resumable Parquet parts."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline.errors import MismatchError, MixedProvenanceError
from pipeline.index.base import set_search_params
from pipeline.index.build import load_index, search
from pipeline.index.config import KnnConfig
from pipeline.index.results import KnnResult
from pipeline.io.files import write_json_atomic, write_parquet_atomic
from pipeline.layout import (
    OutputRoot,
    graph_part_files,
    graph_part_paths,
    graph_parts_done,
    read_graph_record,
    write_graph_record,
)
from pipeline.provenance import require_same, same
from pipeline.roots.features import FeatureSet, feature_columns, iter_batches, open_features, to_matrix
from pipeline.tasks import run_tasks

log = logging.getLogger(__name__)


def run_knn(cfg: KnnConfig) -> KnnResult:
    """Each image's k nearest others → `graph/part-*.parquet`; resumable, in parallel parts when asked."""
    root = OutputRoot.for_features(cfg.features)
    index_dir = Path(cfg.index) if cfg.index else root.index_dir
    out = Path(cfg.out) if cfg.out else root.knn_dir
    fs = open_features(cfg.features, cfg.keys)
    loaded = load_index(index_dir)
    require_same(loaded.record["provenance"], fs.provenance, f"the index in {index_dir}", str(cfg.features),
                 MixedProvenanceError)
    if cfg.workers > 1:
        build_graph_parallel(str(cfg.features), str(index_dir), out, cfg.k, cfg.workers, cfg.part_rows,
                             cfg.executor)
    else:
        if cfg.nprobe:
            set_search_params(loaded.index, cfg.nprobe, loaded.record.get("ef_search", 128))
        build_graph(fs, loaded.index, loaded.record["feature"], out, cfg.k, cfg.part_rows, progress=cfg.progress)
    return KnnResult(out, fs.count, cfg.k)


def knn_schema(k: int) -> pa.Schema:
    return pa.schema([("id", pa.int64()), ("neighbours", pa.list_(pa.int64(), k)),
                      ("similarities", pa.list_(pa.float32(), k))])


def build_graph(fs: FeatureSet, index: faiss.Index, feature: str, out: str | Path, k: int = 64,
                part_rows: int = 65536, progress: bool = True, worker: tuple[int, int] = (0, 1)) -> Path:
    """Each vector's k nearest others (self removed) → `out/part-NNNNN.parquet` + `_done/part-NNNNN.json`.

    Parts are fixed row ranges of the id order, so a rerun skips finished parts and recomputes the rest;
    `worker=(w, W)` takes only parts with number ≡ w (mod W), so W processes or Ray tasks share the work.
    """
    out = Path(out)
    claim_graph(fs, index, feature, out, k, part_rows)
    k_eff = max(0, min(k, fs.count - 1))  # fewer images than k: every other image, then -1 padding
    with tqdm(total=fs.count, unit="vec", disable=not progress, desc=f"knn k={k}") as bar:
        for part, start, vectors in _parts(fs, feature, part_rows):
            path, marker = graph_part_paths(out, part)
            if marker.exists() or part % worker[1] != worker[0]:
                bar.update(len(vectors))
                continue
            sims, ids = search(index, vectors, k_eff + 1) if k_eff > 0 else (np.zeros((len(vectors), 0)),) * 2
            nb, sm = _drop_self(ids.astype(np.int64), sims.astype(np.float32), start, k_eff)
            sm = np.where(nb >= 0, sm, -np.inf).astype(np.float32)  # IVF may return fewer: -1 ids, -inf scores
            nb = np.pad(nb, ((0, 0), (0, k - k_eff)), constant_values=-1)
            sm = np.pad(sm, ((0, 0), (0, k - k_eff)), constant_values=-np.inf)
            table = pa.table({"id": np.arange(start, start + len(vectors), dtype=np.int64),
                              "neighbours": pa.FixedSizeListArray.from_arrays(pa.array(nb.ravel()), k),
                              "similarities": pa.FixedSizeListArray.from_arrays(pa.array(sm.ravel()), k)},
                             schema=knn_schema(k))
            write_parquet_atomic(table, path)
            write_json_atomic({"part": part, "start": start, "rows": len(vectors)}, marker)
            bar.update(len(vectors))
    return out


def claim_graph(fs: FeatureSet, index: faiss.Index, feature: str, out: Path, k: int, part_rows: int) -> None:
    """Write `_graph.json`, or check that the graph already in `out` was made the same way."""
    state = graph_state(fs, feature, k, int(index.ntotal), part_rows)
    old = read_graph_record(out)
    if old is not None and old != state:
        raise MismatchError(f"{out} holds a k-NN graph made differently ({old} vs {state}); delete it or use "
                            f"another OUT")
    write_graph_record(out, state)


def graph_state(fs: FeatureSet, feature: str, k: int, ntotal: int, part_rows: int) -> dict:
    """What `_graph.json` records: a graph is reused only for the same features, feature kind, k and parts."""
    return {"k": k, "count": fs.count, "feature": feature, "ntotal": ntotal,
            "fingerprint": fs.provenance["fingerprint"], "part_rows": part_rows}


def complete_graph(folder: str | Path, fs: FeatureSet, feature: str, k: int) -> bool:
    """A finished graph of these features with these settings (e.g. made in parallel by `make knn`)."""
    state = read_graph_record(folder)
    if state is None or not same(state, fs.provenance) or (
            (state.get("k"), state.get("count"), state.get("feature")) != (k, fs.count, feature)):
        return False
    return graph_parts_done(folder) == -(-fs.count // state["part_rows"])


def graph_worker(features: str, index_dir: str, out: str, k: int, part_rows: int, worker: tuple[int, int]
                  ) -> None:
    """One process's share of the graph parts (module level: it is pickled to workers)."""
    faiss.omp_set_num_threads(1)
    loaded = load_index(index_dir)
    build_graph(open_features(features), loaded.index, loaded.record["feature"], out, k, part_rows,
                progress=False, worker=worker)


def build_graph_parallel(features: str, index_dir: str, out: str | Path, k: int = 64, workers: int = 2,
                         part_rows: int = 65536, executor: str = "local") -> Path:
    """`build_graph` split over `workers` processes (or Ray tasks); each loads the index from disk."""
    loaded = load_index(index_dir)
    fs = open_features(features)
    claim_graph(fs, loaded.index, loaded.record["feature"], Path(out), k, part_rows)
    jobs = [(features, str(index_dir), str(out), k, part_rows, (w, workers)) for w in range(workers)]
    run_tasks(graph_worker, jobs, workers=workers, executor=executor)
    return Path(out)


def _parts(fs: FeatureSet, feature: str, part_rows: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """(part number, first id, normalised vectors) over fixed id ranges."""
    buf: list[np.ndarray] = []
    held, part, start = 0, 0, 0
    for batch in iter_batches(fs, feature_columns(feature), min(part_rows, 65536)):
        buf.append(to_matrix(batch, feature))
        held += batch.num_rows
        while held >= part_rows:
            block = np.concatenate(buf)
            yield part, start, block[:part_rows]
            buf, held = [block[part_rows:]], held - part_rows
            part, start = part + 1, start + part_rows
    if held:
        yield part, start, np.concatenate(buf)


def _drop_self(ids: np.ndarray, sims: np.ndarray, start: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove each row's own id (wherever the index ranked it; an exact twin may come first) → k columns."""
    if k <= 0 or ids.shape[1] == 0:  # one vector (or none): nobody to be near
        return np.zeros((len(ids), 0), np.int64), np.zeros((len(ids), 0), np.float32)
    own = (start + np.arange(len(ids)))[:, None]
    keep = ids != own
    # rows where self was not returned: drop the last column instead
    missing = keep.all(axis=1)
    keep[missing, -1] = False
    return ids[keep].reshape(len(ids), -1)[:, :k], sims[keep].reshape(len(ids), -1)[:, :k]


def iter_parts(graph: str | Path, similarities: bool = True
               ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """(ids (n,), neighbours (n, k), similarities (n, k), or None unless `similarities`) of each graph part, in id
    order; read-only views of the Parquet columns, without a copy (a pass over a 10M graph takes seconds)."""
    columns = ["id", "neighbours"] + (["similarities"] if similarities else [])
    for path in graph_part_files(graph):
        t = pq.read_table(path, columns=columns)
        k = t.schema.field("neighbours").type.list_size
        yield (t.column("id").to_numpy(), _matrix(t.column("neighbours"), k),
               _matrix(t.column("similarities"), k) if similarities else None)


def _matrix(column: pa.ChunkedArray, k: int) -> np.ndarray:
    """A fixed-size-list column as an (n, k) array: a view of a single chunk, else one concatenation."""
    flat = [chunk.flatten().to_numpy(zero_copy_only=False) for chunk in column.chunks]
    return (flat[0] if len(flat) == 1 else np.concatenate(flat) if flat else np.zeros(0)).reshape(-1, k)


def read_edges(graph: str | Path, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, similarity) of every graph edge whose index similarity exceeds `threshold` (approximate for
    PQ/SQ indexes: dedup re-scores candidates exactly instead, see dedup.rescored_edges)."""
    src, dst, sim = [], [], []
    for ids, nb, sm in iter_parts(graph):
        rows, cols = np.nonzero(nb >= 0)
        i, j, s = ids[rows], nb[rows, cols], sm[rows, cols]
        keep = s > threshold
        src.append(i[keep])
        dst.append(j[keep])
        sim.append(s[keep])
    if not src:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return np.concatenate(src), np.concatenate(dst), np.concatenate(sim)
