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


def choose_keepers(component: np.ndarray, pixels: np.ndarray, keys: list[str]) -> np.ndarray:
    """One per component: most pixels, then the smallest key (deterministic)."""
    return keep_highest(component, np.asarray(pixels, np.int64), keys)


def keep_highest(component: np.ndarray, score: np.ndarray, keys: list[str]) -> np.ndarray:
    """One per component: the highest `score`, ties to the smallest key (Python string order)."""
    n = len(keys)
    keep = np.zeros(n, bool)
    if not n:
        return keep
    key_rank = np.argsort(np.argsort(np.asarray(keys, dtype=str), kind="stable"), kind="stable")
    order = np.lexsort((key_rank, -np.asarray(score), np.asarray(component)))
    first = np.ones(n, bool)
    first[1:] = component[order][1:] != component[order][:-1]
    keep[order[first]] = True
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


def nearest_and_reason(n: int, src: np.ndarray, dst: np.ndarray, kind: np.ndarray, vectors: np.ndarray,
                       keep: np.ndarray, component: np.ndarray, sizes: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: most similar linked row (cosine), and why it is grouped (its strongest edge kind)."""
    nearest = np.full(n, -1, np.int64)
    best = np.full(n, -np.inf, np.float32)
    strongest = np.full(n, 99, np.int8)
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
        np.minimum.at(strongest, a, kinds)
    names = np.array([EXACT, PHASH, EMBEDDING, "unique"], dtype=object)
    reason = names[np.where(strongest == 99, 3, strongest)]
    grouped = sizes[component] > 1
    reason = np.where(grouped & keep, "keep", reason)
    reason = np.where(~grouped, "unique", reason)
    return nearest, best, reason.astype(str)
