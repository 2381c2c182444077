"""`make dedup --plan`: the index, graph and exact re-scoring the job would run, and what they need here."""

from __future__ import annotations

from dataclasses import replace

import pipeline.dedup.run  # noqa: F401  (the job's own imports: the plan measures its base after them)
from pipeline.dedup.config import DedupConfig
from pipeline.dedup.edges import RESCORE_MIN_ROWS, dedup_factory, memory_split
from pipeline.errors import ConfigError
from pipeline.index.base import choose_factory
from pipeline.index.calibrate import graph_part
from pipeline.index.knn import complete_graph
from pipeline.index.plan import GIB, Rates, Workload, predict
from pipeline.index.planner import PlanReport, duration, measured_rates, report, this_machine, workload_for
from pipeline.layout import KNN_DIR, OutputRoot
from pipeline.roots.features import open_features


def plan_dedup(cfg: DedupConfig, calibration: bool = True) -> PlanReport:
    """The job's own choices (`dedup_factory`, `cfg.nprobe`, `cfg.k`, the re-scoring block of its memory budget)
    through the memory and disk model, with time from a calibration on a sample of these vectors."""
    if cfg.against or cfg.sweep or cfg.reference:
        raise ConfigError("--plan covers the dedup of one collection: drop --against, --reference and --sweep")
    fs = open_features(cfg.features, cfg.keys)
    dim = fs.dim(cfg.feature)
    factory = cfg.factory or dedup_factory(fs.count, dim)
    machine = this_machine()
    w = workload_for(fs, cfg.feature, factory, machine, nprobe=cfg.nprobe, k=cfg.k, file_rows=max(fs.rows, default=0),
                     phash_all_pairs=fs.count <= cfg.phash_exhaustive_max and not fs.external)
    held, block = memory_split(fs.count, dim, cfg.memory_budget_gb, fs.count * (w.meta_row_bytes + 8), w.file_rows,
                               fs.kind == "npy")
    w = replace(w, rescore_rows=block, vectors_held=held)
    plan = predict(w, measured_rates(fs, cfg.feature, factory, cfg.k, calibration))
    out = OutputRoot(cfg.out).root.parent if cfg.out else OutputRoot.for_features(cfg.features).root
    reuse = [str(f) for f in (OutputRoot.for_features(fs.root).knn_dir, out / "dedup" / KNN_DIR)
             if complete_graph(f, fs, cfg.feature, cfg.k)]
    head = (f"make dedup: {fs.count:,} × {dim} ({cfg.feature}) from {fs.root}; k-NN graph k={cfg.k} over "
            f"{factory}{'' if cfg.factory else ' (auto)'}, nprobe {cfg.nprobe}; vectors "
            f"{'held as float16' if held else 'read from the feature files as needed'} (--memory-budget "
            f"{cfg.memory_budget_gb:g} GiB bounds the per-row records, the vectors and one re-scoring block); exact "
            f"re-scoring in blocks of {block:,} rows"
            + (f"; reuses the finished graph in {reuse[0]} (the index and graph stages are skipped)" if reuse else ""))
    advice = []
    records = fs.count * (w.meta_row_bytes + 8)
    if records + RESCORE_MIN_ROWS * dim * 4 > cfg.memory_budget_gb * GIB:
        advice.append(f"the per-row records alone ({records / GIB:.1f} GiB) leave no room for a re-scoring block in "
                      f"--memory-budget {cfg.memory_budget_gb:g} GiB: the job runs past it; raise it to at least "
                      f"{(records + RESCORE_MIN_ROWS * dim * 4) / GIB * 1.5:.1f} GiB")
    dedup = plan.stages["dedup"]
    if dedup.peak_bytes > machine.available_bytes:
        if held:
            advice.append(f"a --memory-budget below {fs.count * dim * 2 / GIB:.1f} GiB reads the vectors from the "
                          f"feature files as needed instead of holding them (slower: one pass per block)")
        advice.append(f"use a node with {dedup.peak_bytes / GIB * 1.1:.0f} GiB, or dedup the pool in slices "
                      f"(--where) and the slices against each other (--against)")
        if dedup.bound_by.startswith("exact re-scoring"):
            advice.append("a smaller --memory-budget shrinks the re-scoring block (more passes over the graph)")
    if dedup.seconds and dedup.seconds > 3600 and not reuse:
        advice.append(f"build the graph on Ray first: make index ARGS='--factory {factory} --parts N --executor ray' "
                      f"then make knn ARGS='--k {cfg.k} --nprobe {cfg.nprobe} --workers N --executor ray'; make "
                      f"dedup reuses that graph")
    return report(head, plan, ("dedup:index", "dedup:graph", "dedup:rest", "dedup"), machine, advice)


PAPER_SIZES = (10_000_000, 100_000_000, 1_000_000_000)
PAPER_DIM = 384
NODE_SPEED = 32  # a large node: 64 cores, 32 times the default rates (those of a 2-core machine)
PAPER_PARTS = 16  # index --parts / knn --workers on Ray
NODE_BUDGET_GB = 256.0  # make dedup's --memory-budget on that node (512 GiB): the default 4 GiB would not even hold
# the per-row records of 100M images, leaving the re-scoring thousands of passes of its smallest block


def paper_table() -> str:
    """docs/scaling.md's table: the model at 10M, 100M and 1B × 384 with the jobs' own defaults (float16 features,
    make index's default memory budget, make dedup's NODE_BUDGET_GB), on one large node and with the graph's work
    spread over Ray workers."""
    rates = Rates()
    node = replace(rates, **{f: getattr(rates, f) * NODE_SPEED for f in (
        "gemm_flops", "scan_codes", "read_rows", "graph_rows", "rescore_pairs", "pair_checks")},
                   query_seconds=rates.query_seconds / NODE_SPEED, encode_seconds=rates.encode_seconds / NODE_SPEED)
    lines = ["| N × 384 | make index | its peak, disk | make dedup's graph | dedup peak (bounded by) | graph on disk "
             "| dedup time, one node | with --parts/--workers 16 |", "|---|---|---|---|---|---|---|---|"]
    for n in PAPER_SIZES:
        index = choose_factory(n, PAPER_DIM, DedupConfig.memory_budget_gb * GIB)
        one = predict(Workload(n, PAPER_DIM, index), node).stages["index"]
        factory = dedup_factory(n, PAPER_DIM)
        held, block = memory_split(n, PAPER_DIM, NODE_BUDGET_GB, n * (Workload.meta_row_bytes + 8), Workload.file_rows)
        w = Workload(n, PAPER_DIM, factory, nprobe=DedupConfig.nprobe, k=DedupConfig.k, vectors_held=held,
                     rescore_rows=block,
                     graph_disk_row_bytes=graph_part(n, DedupConfig.k)[0])
        dedup = predict(w, node).stages
        spread = predict(replace(w, parts=PAPER_PARTS), node).stages
        # with --parts/--workers, the index add and the graph run on 16 workers; the rest stays one process
        parted = spread["dedup:index"].seconds + spread["dedup:graph"].seconds + dedup["dedup:rest"].seconds
        lines.append(f"| {n:,} | {index} | {one.peak_bytes / GIB:,.1f} GiB, {one.disk_bytes / GIB:,.1f} GiB "
                     f"| {factory}, nprobe {DedupConfig.nprobe}, k {DedupConfig.k} "
                     f"| {dedup['dedup'].peak_bytes / GIB:,.0f} GiB ({dedup['dedup'].bound_by}) "
                     f"| {dedup['dedup:graph'].disk_bytes / GIB:,.0f} GiB | {duration(dedup['dedup'].seconds)} "
                     f"| {duration(parted)} |")
    return "\n".join(lines)
