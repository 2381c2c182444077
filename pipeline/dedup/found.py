"""Every edge among the rows of one feature set: exact, perceptual and embedding, with each stage's counts.

Shared by the dedup of one collection (run.py), `--against` (against.py) and `--sweep` (sweep.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.dedup.config import DedupConfig
from pipeline.dedup.edges import (
    EMBEDDING,
    EXACT,
    PHASH,
    Edges,
    confirmed_by_embedding,
    embedding_edges,
    exact_edges,
    held_records,
    knn_graph,
    orientation_variants,
    phash_candidate_edges,
    phash_edges,
)
from pipeline.io.freed_memory import release_freed_memory
from pipeline.provenance import describe_origin, is_random
from pipeline.roots.features import FeatureSet, has_hashes

log = logging.getLogger(__name__)


@dataclass
class SelfEdges:
    """Every edge among the rows of one feature set, the stages' counts, whether the embedding stage ran, and
    the pHashes it compared (each row's, and those of its turned and flipped image) for later stages."""

    edges: Edges
    stages: dict
    use_embedding: bool
    hashes: np.ndarray
    variants: list[np.ndarray]


def self_edges(fs: FeatureSet, meta: pa.Table, vectors: np.ndarray, cfg: DedupConfig, out: Path,
               variants_after: bool = True) -> SelfEdges:
    """Exact, perceptual and (unless off or random weights) embedding edges among the rows of `fs`. Without
    `variants_after` the turned and flipped pHashes (56 bytes a row) go before the re-scoring: none returned."""
    if not has_hashes(fs):
        return embedding_only(fs, vectors, cfg, out)
    edges = Edges([], [], [])
    n = fs.count
    i, j = exact_edges(meta.column("sha1"))
    release_freed_memory()  # what Arrow's grouping of the sha1s freed, its pool would keep
    edges.add(i, j, EXACT)
    stages: dict[str, dict] = {EXACT: {"edges": int(len(i))}}
    hashes = meta.column("phash").to_numpy()
    variants = orientation_variants(fs, hashes, set(fs.columns()))
    random_weights = is_random(fs.provenance)
    use_embedding = cfg.embedding if cfg.embedding is not None else not random_weights
    if n <= cfg.phash_exhaustive_max:
        i, j = phash_edges(hashes, cfg.phash_distance, variants)
        strategy = "all pairs"
    else:  # N² Hamming comparisons (× 8 orientations) would take hours: check k-NN neighbours only
        graph, _ = knn_graph(fs, cfg, out)
        i, j = phash_candidate_edges(graph, hashes, variants, cfg.phash_distance)
        strategy = f"the {cfg.k} nearest neighbours of each image"
    # 64-bit hashes of unrelated images meet within a few bits by chance when billions of pairs are compared: with
    # the embedding on, a pHash match counts only where the two images' cosine does not contradict it
    checked = use_embedding and cfg.phash_min_cosine > -1
    agree = confirmed_by_embedding(vectors, i, j, cfg.phash_min_cosine if checked else -1)
    edges.add(i[agree], j[agree], PHASH)
    stages[PHASH] = {"edges": int(agree.sum()), "distance": cfg.phash_distance, "mirror_aware": len(variants) >= 1,
                     "orientations": len(variants) + 1, "compared": strategy,
                     "min_cosine": cfg.phash_min_cosine if checked else None,
                     "below_min_cosine": int((~agree).sum())}
    if int((~agree).sum()):
        log.info("dedup: %d pHash matches are not linked: their cosine is below --phash-min-cosine %g",
                 int((~agree).sum()), cfg.phash_min_cosine)

    if not variants_after:
        variants = []
    if use_embedding:
        i, j, info = embedding_edges(fs, vectors, cfg, out, held_records(meta, 1 + len(variants)))
        edges.add(i, j, EMBEDDING)
        stages[EMBEDDING] = {"edges": int(len(i)), "threshold": cfg.threshold, "k": cfg.k, **info}
    else:
        log.warning("features come from random weights: the embedding stage%s is off (exact and perceptual "
                    "only); pass --embedding to force it", " and the embedding check against --reference"
                    if cfg.reference else "")
        stages[EMBEDDING] = {"edges": 0, "skipped": "random weights" if random_weights else "disabled"}

    return SelfEdges(edges, stages, use_embedding, hashes, variants)


def embedding_only(fs: FeatureSet, vectors: np.ndarray, cfg: DedupConfig, out: Path) -> SelfEdges:
    """Features made elsewhere carry no image hashes: embedding edges only, unless the embedding stage is off
    (random weights, as an export-npy sidecar records them, or --no-embedding): then nothing is compared."""
    skipped = {"edges": 0, "skipped": "no image hashes (features made elsewhere)"}
    stages = {EXACT: dict(skipped), PHASH: dict(skipped)}
    edges = Edges([], [], [])
    random_weights = is_random(fs.provenance)
    use_embedding = cfg.embedding if cfg.embedding is not None else not random_weights
    if not use_embedding:
        why = (f"its vectors come from random weights ({describe_origin(fs.provenance)}), so the embedding stage "
               "is off; pass --embedding to compare them anyway" if cfg.embedding is None
               else "--no-embedding turns the embedding stage off")
        log.warning("dedup: nothing was compared and every image is kept: %s holds no image hashes (features made "
                    "elsewhere) and %s", fs.root, why)
        stages[EMBEDDING] = {"edges": 0, "skipped": "random weights" if cfg.embedding is None else "disabled"}
        return SelfEdges(edges, stages, False, np.zeros(0, np.uint64), [])
    log.info("dedup: %s holds features made elsewhere, without image hashes: the exact and perceptual stages are "
             "skipped, embedding edges only", fs.root)
    if random_weights:
        log.warning("dedup: %s comes from random weights (%s): --embedding compares vectors whose similarities "
                    "mean nothing", fs.root, describe_origin(fs.provenance))
    i, j, info = embedding_edges(fs, vectors, cfg, out)
    edges.add(i, j, EMBEDDING)
    stages[EMBEDDING] = {"edges": int(len(i)), "threshold": cfg.threshold, "k": cfg.k, **info}
    return SelfEdges(edges, stages, True, np.zeros(0, np.uint64), [])
