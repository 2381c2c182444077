"""`--plan`: the model's prediction for one job's own choices, on this machine, as text; nothing is written."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import faiss
import numpy as np

from pipeline.errors import MissingInputError
from pipeline.index.base import choose_factory
from pipeline.index.calibrate import calibrate, column_bytes, graph_part, read_sample
from pipeline.index.config import IndexConfig, KnnConfig
from pipeline.index.plan import GIB, OVERHEAD, Plan, Rates, StagePlan, Workload, predict
from pipeline.layout import INDEX_FILE, OutputRoot, read_index_record
from pipeline.roots.features import FeatureSet, open_features

log = logging.getLogger(__name__)

META_COLUMNS = ("key", "shard", "index", "width", "height", "sha1", "phash")
IDS_COLUMNS = ("key", "shard", "index")
GROUPS_DISK_EXTRA = 6  # groups.parquet: the ids' columns and ~6 bytes a row of ids, components and flags
STAGE_TITLES = {"index": "make index", "graph": "make knn", "dedup": "make dedup, the whole job",
                "dedup:index": "dedup until its index is written", "dedup:graph": "dedup until its graph is done",
                "dedup:rest": "dedup after the graph", "balanced": "curate --balanced"}


@dataclass(frozen=True)
class PlanReport:
    """A job's plan: the text `--plan` prints, and the model's figures behind it."""

    text: str
    plan: Plan
    machine: Machine
    stages: tuple[str, ...]  # the stages the text shows


@dataclass(frozen=True)
class Machine:
    cores: int
    memory_bytes: float  # what the machine has
    available_bytes: float  # what it has free now
    base_bytes: float  # this process after its imports and first BLAS products: a job's base
    startup_seconds: float  # since this process started: a job's start-up and imports


def warm_blas() -> None:
    """One small matrix product through NumPy's BLAS and one through Faiss's: each library's per-thread buffers
    are allocated at its first product and held for the life of the process, so a job's base includes them."""
    x = np.ones((256, 384), np.float32)
    _ = x @ x[:128].T
    index = faiss.IndexFlatIP(384)
    index.add(x)
    index.search(x[:64], 1)  # 20 queries or more take Faiss's BLAS path


def this_machine() -> Machine:
    warm_blas()
    info = {}
    with open("/proc/meminfo") as f:
        for line in f:
            name, _, value = line.partition(":")
            info[name] = float(value.split()[0]) * 1024
    with open("/proc/self/status") as f:
        rss = next(float(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
    with open("/proc/self/stat") as f:
        started = float(f.read().rpartition(")")[2].split()[19]) / os.sysconf("SC_CLK_TCK")
    with open("/proc/uptime") as f:
        alive = float(f.read().split()[0]) - started
    return Machine(os.cpu_count() or 1, info.get("MemTotal", 0), info.get("MemAvailable", 0), rss, max(alive, 0.0))


def workload_for(fs: FeatureSet, feature: str, factory: str, machine: Machine, **choices) -> Workload:
    """The model's input for these features: sizes from the files' footers, the job's resolved choices."""
    dim = fs.dim(feature)
    ids_disk, ids_raw = column_bytes(fs, IDS_COLUMNS)
    _, meta_raw = column_bytes(fs, META_COLUMNS)
    stored = 2 if fs.kind != "npy" else 4
    ids_disk = ids_disk or Workload.ids_disk_row_bytes
    graph, _ = graph_part(fs.count, choices.get("k", Workload.k), choices.get("part_rows", Workload.part_rows))
    return Workload(n=fs.count, dim=dim, factory=factory, stored_bytes=stored, base_bytes=machine.base_bytes,
                    startup_seconds=machine.startup_seconds,
                    ids_disk_row_bytes=ids_disk, ids_row_bytes=ids_raw or Workload.ids_row_bytes,
                    meta_row_bytes=meta_raw or Workload.meta_row_bytes, graph_disk_row_bytes=graph,
                    groups_disk_row_bytes=ids_disk + GROUPS_DISK_EXTRA, **choices)


def measured_rates(fs: FeatureSet, feature: str, factory: str, k: int, calibration: bool) -> Rates:
    if not calibration or fs.count < 1024:
        return Rates()
    sample, read_rows = read_sample(fs, feature)
    _, graph_rows = graph_part(fs.count, k)
    return calibrate(sample, factory, k, read_rows or Rates.read_rows, graph_rows, pool_rows=fs.count)


def plan_index(cfg: IndexConfig, calibration: bool = True) -> PlanReport:
    """What `make index` would build (the job's own `choose_factory`) and need, without building it."""
    fs = open_features(cfg.features, cfg.keys)
    machine = this_machine()
    factory = cfg.factory or choose_factory(fs.count, fs.dim(cfg.feature), cfg.memory_budget_gb * GIB)
    w = workload_for(fs, cfg.feature, factory, machine, nprobe=cfg.nprobe, train_size=cfg.train_size,
                     batch_rows=cfg.batch_rows, parts=cfg.parts)
    plan = predict(w, measured_rates(fs, cfg.feature, factory, 64, calibration))
    head = f"make index: {fs.count:,} × {w.dim} ({cfg.feature}) from {fs.root} → {factory}" + \
        (f" (auto at --memory-budget {cfg.memory_budget_gb:g} GiB)" if not cfg.factory else "") + \
        (f", in {cfg.parts} parts ({cfg.executor})" if cfg.parts > 1 else "")
    return report(head, plan, ("index",), machine, advice_index(plan, cfg, machine))


def plan_knn(cfg: KnnConfig, calibration: bool = True) -> PlanReport:
    """What `make knn` would search (the index it finds, its nprobe) and need, without searching."""
    fs = open_features(cfg.features, cfg.keys)
    root = OutputRoot.for_features(cfg.features)
    index_dir = Path(cfg.index) if cfg.index else root.index_dir
    record = read_index_record(index_dir)
    if record is None or not (index_dir / INDEX_FILE).exists():
        raise MissingInputError(f"no index in {index_dir}: make knn searches one; plan it first with make index "
                                f"FEATURES={cfg.features} ARGS='--plan'")
    machine = this_machine()
    nprobe = cfg.nprobe or record.get("nprobe")
    w = workload_for(fs, record["feature"], record["factory"], machine, nprobe=nprobe, k=cfg.k,
                     part_rows=cfg.part_rows, parts=cfg.workers)
    plan = predict(w, measured_rates(fs, record["feature"], record["factory"], cfg.k, calibration))
    head = (f"make knn: k={cfg.k} over {fs.count:,} × {w.dim} with the index in {index_dir} ({record['factory']}, "
            f"nprobe {nprobe})" + (f", {cfg.workers} workers ({cfg.executor})" if cfg.workers > 1 else ""))
    advice = []
    if plan.stages["graph"].seconds and plan.stages["graph"].seconds > 3600 and cfg.workers == 1:
        advice.append(f"spread the queries: --workers N --executor ray (time ÷ N; each worker holds the index, "
                      f"{plan.stages['graph'].held['index (codes + ids)'] / GIB:.1f} GiB)")
    return report(head, plan, ("graph",), machine, advice)


def advice_index(plan: Plan, cfg: IndexConfig, machine: Machine) -> list[str]:
    """What to change when the index will not fit: a smaller code (PQ), the add spread over parts."""
    stage = plan.stages["index"]
    out = []
    w = plan.workload
    if stage.peak_bytes > machine.available_bytes:
        budget = max(machine.available_bytes / 2, GIB / 4)
        smaller = choose_factory(w.n, w.dim, budget)
        alt = predict(replace(w, factory=smaller), plan.rates).stages["index"]
        out.append(f"PQ instead of {w.factory}: --memory-budget {budget / GIB:.1f} picks {smaller} "
                   f"(peak {alt.peak_bytes / GIB:.1f} GiB)")
    elif plan.shape.kind == "ivf" and "PQ" in w.factory and not cfg.factory:
        richer = choose_factory(w.n, w.dim, machine.available_bytes / 2)
        if richer != w.factory:
            out.append(f"more --memory-budget ({machine.available_bytes / 2 / GIB:.0f} GiB, half of what is free) "
                       f"would pick {richer}: exact or near-exact distances instead of 4-bit PQ")
    if stage.seconds and stage.seconds > 3600 and cfg.parts == 1 and plan.shape.kind == "ivf":
        out.append("spread the add: --parts N --executor ray (add time ÷ N; the merge holds the whole index)")
    return out


def gib(x: float) -> str:
    return f"{x / GIB:.2f} GiB"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "not modelled"
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def report(head: str, plan: Plan, stages: tuple[str, ...], machine: Machine, advice: list[str]) -> PlanReport:
    return PlanReport(describe(head, plan, stages, machine, advice), plan, machine, stages)


def describe(head: str, plan: Plan, stages: tuple[str, ...], machine: Machine, advice: list[str]) -> str:
    """The plan as the job prints it."""
    w, s = plan.workload, plan.shape
    lines = [head, f"  index {w.factory}: {s.nlist:,} lists, {s.code_bytes:g} bytes a vector (codes + id); "
                   f"nprobe {w.nprobe or 'index default'}; k {w.k}"]
    for name in stages:
        st: StagePlan = plan.stages[name]
        lines.append(f"  {STAGE_TITLES.get(name, name)}: peak {gib(st.peak_bytes)} (incl. {OVERHEAD:.0%} overhead), "
                     f"disk {gib(st.disk_bytes)}, time {duration(st.seconds)}")
        lines.append(f"    bounded by: {st.bound_by}; streams: {st.streams}")
        lines.append("    holds: " + ", ".join(f"{k} {gib(v)}" for k, v in st.held.items()))
    r = plan.rates
    lines.append(f"  machine: {machine.cores} cores, {gib(machine.memory_bytes)} ({gib(machine.available_bytes)} "
                 f"free); " + (f"rates measured on a sample of these vectors: {r.gemm_flops / 1e9:.0f} GFLOP/s, "
                               f"{r.scan_codes / 1e6:.0f} M codes/s, {r.read_rows:,.0f} rows/s read"
                               if r.measured else "rates: defaults (no calibration)"))
    peak = max(plan.stages[n].peak_bytes for n in stages)
    fits = peak <= machine.available_bytes
    lines.append(f"  fits: {'yes' if fits else 'NO'} ({gib(peak)} of {gib(machine.available_bytes)} free)")
    lines += [f"  to change: {a}" for a in advice]
    lines.append("  (a plan: nothing was built or written)")
    return "\n".join(lines)
