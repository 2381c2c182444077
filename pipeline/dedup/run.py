"""The dedup stage: edges of every kind → components → one keeper each → groups.parquet + summary.json."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.dedup.against import run_dedup_against
from pipeline.dedup.config import DedupConfig
from pipeline.dedup.decided import refresh_duplicates_csv, write_duplicates_csv
from pipeline.dedup.edges import KIND_ORDER, contaminated_ids, dedup_vectors, held_records
from pipeline.dedup.found import self_edges
from pipeline.dedup.groups import (
    CONTAMINATED,
    EXCLUDED,
    GROUP_SCHEMA,
    REASONS,
    components,
    nearest_and_reason,
    reason_names,
)
from pipeline.dedup.keeper import source_reader
from pipeline.dedup.results import AgainstResult, DedupResult, FolderDedupResult, SweepResult
from pipeline.dedup.semantic import choose_by_policy
from pipeline.dedup.sweep import run_sweep
from pipeline.errors import ConfigError, InputError
from pipeline.extract.config import ExtractConfig
from pipeline.extract.runner import run_extract
from pipeline.index.rows import where_mask
from pipeline.io.files import write_parquet_atomic
from pipeline.io.freed_memory import release_freed_memory
from pipeline.layout import GROUPS, SUMMARY, OutputRoot, is_external, write_summary
from pipeline.roots.features import FeatureSet, open_features, read_meta

log = logging.getLogger(__name__)


def run_dedup(cfg: DedupConfig) -> DedupResult | AgainstResult | SweepResult:
    """Write `dedup/groups.parquet` and `dedup/summary.json`; returns the counts, paths and summary record. With
    `cfg.against` (a collection already processed): `dedup/against.parquet` instead, see dedup/against.py; with
    `cfg.sweep`: `dedup/sweep.parquet` only, see dedup/sweep.py."""
    if cfg.where and (cfg.against or cfg.sweep):
        raise ConfigError("--where works on a dedup of one collection: drop it with --against or --sweep")
    if cfg.against:
        return run_dedup_against(cfg)
    if cfg.sweep:  # a dry run: dedup/sweep.parquet only, see dedup/sweep.py
        return run_sweep(cfg)
    t0 = time.perf_counter()
    fs = open_features(cfg.features, cfg.keys)
    if cfg.reference:
        check_reference(fs, cfg.reference)
    out = Path(cfg.out or OutputRoot.for_features(cfg.features).dedup_dir)
    meta = read_meta(fs, ("key", "shard", "index", "width", "height", "sha1", "phash"), absent="null")
    release_freed_memory()  # the files' decoded pages, freed once the columns are concatenated
    n = fs.count
    # --where: only matching rows take part; an excluded row keeps no edge, so it is its own group, kept as it is
    excluded = ~where_mask(fs, cfg.where) if cfg.where else np.zeros(n, bool)
    if n and excluded.all():
        raise ConfigError(f"--where {cfg.where!r} matches none of the {n} images of {fs.root}: nothing would be "
                          f"compared; check the expression against the values (make report shows them)")
    keys = meta.column("key")  # Arrow, as read: a Python string per row would cost ~76 bytes each
    # float16, held when they fit --memory-budget beside the metadata and the pHashes, else read as needed
    vectors = dedup_vectors(fs, cfg, held_records(meta, 8 if cfg.reference else 1))
    found = self_edges(fs, meta, vectors, cfg, out, variants_after=bool(cfg.reference))  # decontamination uses them
    stages, use_embedding = found.stages, found.use_embedding
    src, dst, kind = found.edges.arrays()
    linked = ~(excluded[src] | excluded[dst])
    if cfg.where:
        count_taking_part(stages, kind, linked)
    src, dst, kind = src[linked], dst[linked], kind[linked]
    component, sizes = components(n, src, dst)
    pixels = (meta.column("width").fill_null(0).to_numpy().astype(np.int64)  # made elsewhere: unknown, 0
              * meta.column("height").fill_null(0).to_numpy())
    reader = source_reader(fs.root, cfg.progress) if cfg.keep == "quality" and not fs.external else None
    keepers = choose_by_policy(cfg, component, sizes, pixels, keys, vectors, use_embedding, meta, reader)
    keep = keepers.keep
    nearest, nearest_sim, reason = nearest_and_reason(n, src, dst, kind, vectors, keep, component, sizes)

    contaminated = np.zeros(n, bool)
    if cfg.reference:
        touched, evidence = contaminated_ids(fs, vectors, meta.column("sha1"), [found.hashes, *found.variants], cfg,
                                             use_embedding)
        bad_components = np.unique(component[touched]) if len(touched) else np.zeros(0, np.int64)
        contaminated = np.isin(component, bad_components) & ~excluded
        stages["reference"] = {"reference": cfg.reference, "touched": evidence, "embedding": use_embedding,
                               "threshold": cfg.reference_threshold if use_embedding else None}
        share = contaminated.sum() / max(n, 1)
        if share > cfg.max_contaminated and not cfg.force:
            raise InputError(
                f"decontamination would drop {int(contaminated.sum())} of {n} pool images ({share:.0%}), more "
                f"than --max-contaminated {cfg.max_contaminated:.0%} (touched: {evidence}); the reference "
                f"threshold {cfg.reference_threshold} is likely too low for this model. Look at the similarities "
                f"first (make report), raise --reference-threshold, or pass --force to drop them anyway")
        keep = keep & ~contaminated
        reason[contaminated] = CONTAMINATED
        keepers.drop_reasons(contaminated)

    reason[excluded] = EXCLUDED
    table = pa.table({
        "key": keys, "shard": meta.column("shard"), "index": meta.column("index"), "id": np.arange(n),
        "component": component, "component_size": sizes[component].astype(np.int32), "keep": keep,
        "nearest_key": keys.take(pa.array(nearest, pa.int64(), mask=nearest < 0)),
        "nearest_similarity": pa.array(np.where(nearest >= 0, nearest_sim, np.nan), pa.float32(),
                                       mask=nearest < 0),
        "reason": reason_names(reason),
    }, schema=GROUP_SCHEMA)
    write_parquet_atomic(keepers.add_columns(table), out / GROUPS)
    listed = None
    if not fs.external and out.resolve() == OutputRoot(fs.root).dedup_dir.resolve():
        listed = refresh_duplicates_csv(fs.root)  # a folder's duplicates.csv never lags its groups
    summary = summarize(cfg, fs, sizes, component, reason, keep, contaminated, stages, time.perf_counter() - t0)
    summary["keep"] = keepers.info
    if cfg.where:
        summary["where"] = {"expression": cfg.where, "excluded": int(excluded.sum())}
    write_summary(out, summary)
    return DedupResult(summary["images"], summary["kept"], summary["duplicates_removed"],
                       summary["contaminated_removed"], summary["groups"], summary["largest_component"],
                       summary["reasons"], out / GROUPS, out / SUMMARY, summary.get("warning"),
                       summary["seconds"], summary["stages"], summary["keep"], summary.get("where"),
                       summary["weights"], summary, listed)


REFERENCE_NEEDS = ("--reference takes the extract output root of an evaluation set, made with the pool's model, "
                   "weights and preprocessing (make extract IMAGES=eval/ OUT=out/eval)")


def check_reference(pool: FeatureSet, reference: str) -> None:
    """Decontamination compares image hashes and vectors of two extract outputs made alike: features made
    elsewhere (on either side) have no hashes, so that is said in one short line, before any work."""
    if is_external(reference):
        raise InputError(f"{REFERENCE_NEEDS}: {reference} holds features made elsewhere, without image hashes")
    if pool.external:
        raise InputError(f"{REFERENCE_NEEDS}, and FEATURES to be one too: {pool.root} holds features made "
                         f"elsewhere, without image hashes")


def count_taking_part(stages: dict, kind: np.ndarray, linked: np.ndarray) -> None:
    """With --where, each stage's `edges` counts only edges between images that take part; the edges found that
    touch an excluded image (which never groups) are counted apart, as `edges_excluded`."""
    for name, info in stages.items():
        if name in KIND_ORDER and "skipped" not in info:
            of_kind = kind == KIND_ORDER[name]
            info["edges"] = int((of_kind & linked).sum())
            info["edges_excluded"] = int((of_kind & ~linked).sum())


def summarize(cfg: DedupConfig, fs: FeatureSet, sizes: np.ndarray, component: np.ndarray, reason: np.ndarray,
              keep: np.ndarray, contaminated: np.ndarray, stages: dict, seconds: float) -> dict:
    values, counts = np.unique(reason, return_counts=True)
    hist_sizes, hist_counts = np.unique(sizes, return_counts=True)
    largest = int(sizes.max()) if len(sizes) else 0
    summary = {
        "images": int(fs.count), "kept": int(keep.sum()), "removed": int((~keep).sum()),
        "duplicates_removed": int(((~keep) & ~contaminated).sum()),
        "contaminated_removed": int(contaminated.sum()),
        "groups": int((sizes > 1).sum()), "largest_component": largest,
        "reasons": {REASONS[v]: int(c) for v, c in zip(values, counts)},
        "component_sizes": {str(int(s)): int(c) for s, c in zip(hist_sizes, hist_counts)},
        "stages": stages, "feature": cfg.feature, "weights": fs.provenance.get("weights"),
        "model": fs.provenance.get("model"), "config": asdict(cfg), "seconds": round(seconds, 3),
    }
    limit = cfg.large_component_limit(fs.count)
    if largest > limit:
        summary["warning"] = (f"one component holds {largest} of {fs.count} images ({largest / fs.count:.0%}; "
                              f"a component over {limit:g} is suspect): the threshold ({cfg.threshold}) may be too "
                              f"low for this model, chaining unrelated images; inspect it before deleting")
        log.warning(summary["warning"])
    return summary


def dedup_images(extract: ExtractConfig, cfg: DedupConfig) -> FolderDedupResult:
    """The one-command path for a folder: extract (resumable, cached), dedup, `duplicates.csv` beside them.

    Nothing is deleted or moved: the CSV lists each duplicate file with the file kept in its group."""
    if not extract.images:
        raise ConfigError("dedup_images needs an image folder (ExtractConfig.images)")
    if cfg.against:
        raise ConfigError("--against works on extract outputs: extract the new folder first (make extract "
                          "IMAGES=... OUT=new), then make dedup FEATURES=new ARGS='--against OLD'")
    stats = run_extract(extract)
    if stats.failed:
        return FolderDedupResult(stats, None, None)
    root = OutputRoot(extract.out)
    done = run_dedup(replace(cfg, features=str(root.root)))
    if not isinstance(done, DedupResult):  # a sweep (dry run): its record, no duplicates.csv
        return FolderDedupResult(stats, done, None)
    csv = root.duplicates_csv_path
    n = done.listed  # written by run_dedup into the root's own dedup/; a --out elsewhere: written here
    if n is None:
        n = write_duplicates_csv(done.groups_path, extract.images, csv)
    return FolderDedupResult(stats, done, csv, n)
