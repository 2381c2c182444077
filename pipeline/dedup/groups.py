"""From edges to decisions: connected components, one keeper each, each row's nearest linked row and reason."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from pipeline.dedup.edges import EMBEDDING, EXACT, PHASH
from pipeline.roots.features import shown_similarity

GROUP_SCHEMA = pa.schema([
    ("key", pa.string()), ("shard", pa.string()), ("index", pa.int32()), ("id", pa.int64()),
    ("component", pa.int64()), ("component_size", pa.int32()), ("keep", pa.bool_()),
    ("nearest_key", pa.string()), ("nearest_similarity", pa.float32()), ("reason", pa.string()),
])

KEEP_REASON = "keep_reason"  # why a keeper won (dedup/keeper.py); null on every other row


def components(n: int, src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Connected components (scipy), renumbered by first member so ids are stable across reruns."""
    graph = coo_matrix((np.ones(len(src), np.int8), (src, dst)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))  # component numbered by its smallest member id
    component = order[inverse].astype(np.int64)
    sizes = np.bincount(component, minlength=component.max() + 1 if n else 0)
    return component, sizes


Keys = list | pa.Array | pa.ChunkedArray  # a list, or the Arrow column the values came in


def choose_keepers(component: np.ndarray, pixels: np.ndarray, keys: Keys) -> np.ndarray:
    """One per component: most pixels, then the smallest key (deterministic)."""
    return keep_highest(component, np.asarray(pixels, np.int64), keys)


def take_values(values: Keys, rows: np.ndarray) -> list:
    """The values of `rows` as Python objects (only those: a list of every key costs ~76 bytes a row)."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values.take(pa.array(rows, pa.int64())).to_pylist()
    return [values[i] for i in rows]


def keep_highest(component: np.ndarray, score: np.ndarray, keys: Keys) -> np.ndarray:
    """One per component: the highest `score`, ties to the smallest key (Python string order, which UTF-8's byte
    order keeps). A row alone in its component is kept without a look at its key: only grouped rows are ranked."""
    n = len(keys)
    keep = np.ones(n, bool)
    if not n:
        return keep
    component = np.asarray(component)
    grouped = np.flatnonzero(np.bincount(component)[component] > 1)
    if not len(grouped):
        return keep
    keep[grouped] = False
    names = np.asarray(take_values(keys, grouped), dtype=str)
    key_rank = np.argsort(np.argsort(names, kind="stable"), kind="stable")
    comp = component[grouped]
    order = np.lexsort((key_rank, -np.asarray(score)[grouped], comp))
    first = np.ones(len(order), bool)
    first[1:] = comp[order][1:] != comp[order][:-1]
    keep[grouped[order[first]]] = True
    return keep


def exact_cosine(vectors: np.ndarray, i: np.ndarray, j: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """Cosine of each (i, j) pair; the rows they name are gathered once (one pass when `vectors` are read from
    the feature files, roots/rows.py)."""
    rows = np.unique(np.concatenate([i, j])) if len(i) else np.zeros(0, np.int64)
    held = vectors[rows]
    a_at, b_at = np.searchsorted(rows, i), np.searchsorted(rows, j)
    out = np.empty(len(i), np.float32)
    for s in range(0, len(i), chunk):
        a = held[a_at[s:s + chunk]].astype(np.float32)
        b = held[b_at[s:s + chunk]].astype(np.float32)
        out[s:s + chunk] = (a * b).sum(1)
    return out


# a row's reason in groups.parquet, held as its index here (int8: no string per row until the table is written)
REASONS = (EXACT, PHASH, EMBEDDING, "unique", "keep", "contaminated", "excluded")
UNIQUE, KEEP, CONTAMINATED, EXCLUDED = 3, 4, 5, 6


def reason_names(codes: np.ndarray) -> pa.Array:
    """The reason codes as groups.parquet's strings."""
    return pa.DictionaryArray.from_arrays(pa.array(codes, pa.int8()), pa.array(REASONS)).cast(pa.string())


def nearest_and_reason(n: int, src: np.ndarray, dst: np.ndarray, kind: np.ndarray, vectors: np.ndarray,
                       keep: np.ndarray, component: np.ndarray, sizes: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: most similar linked row (cosine), and why it is grouped (its strongest edge kind, as an index
    into REASONS)."""
    nearest = np.full(n, -1, np.int64)
    best = np.full(n, -np.inf, np.float32)
    strongest = np.full(n, UNIQUE, np.int8)
    if len(src):
        a = np.concatenate([src, dst])
        b = np.concatenate([dst, src])
        kinds = np.concatenate([kind, kind])
        sim = exact_cosine(vectors, a, b)
        order = np.lexsort((-sim, a))  # per row a, most similar first
        first = np.ones(len(order), bool)
        first[1:] = a[order][1:] != a[order][:-1]
        sel = order[first]
        nearest[a[sel]], best[a[sel]] = b[sel], shown_similarity(sim[sel])
        np.minimum.at(strongest, a, kinds)  # the kinds are 0-2, stronger first: below UNIQUE
    grouped = sizes[component] > 1
    strongest[grouped & keep] = KEEP
    strongest[~grouped] = UNIQUE
    return nearest, best, strongest
