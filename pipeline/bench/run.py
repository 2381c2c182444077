"""The bench as one run: the machine, its matmul limits, per precision the backbone and end-to-end, fast paths.

Everything is measured in one process, so that ratios hold on a noisy machine; `run_bench` writes
`bench.json` and `bench.png` into `cfg.out` and returns the record, `format_bench` prints it.

bench.json: "capability" (CPU model, cores, threads, kernel flags, torch's and Faiss's view; on a CPU
"freed_memory_kept": whether glibc keeps the forward passes' freed memory, extract/allocator.py), "auto" (the
precision `--precision auto` resolves to here, and why), "matmul_limits" ({"fp32": {"gflops"}, "bf16":
{"gflops"}, "int8": {"gops"} or {"skipped": why}}), "precisions" ({"fp32": block, "bf16": block}: each block
holds its matmul_gflops, ceiling_images_per_second, backbone_sweep, backbone_at_batch (its "around_rounds":
the backbone measured before, between and after the end-to-end rounds), end_to_end (its "rounds", and measured
inside each round, free of the drift between rounds: "forward_share_rounds", "loader_wait_share_rounds",
"first_batch_seconds_rounds", "loader_cpu_ms_per_image_rounds" (the workers' CPU time per image, all their
threads: above the one-thread "loader_costs", which times `process` alone), "loader_cpu_in_forward_ms_per_image_rounds"
(the part of it spent while a forward pass ran), "reference_rounds" (the backbone
alone, timed between the run's batches with the loader's workers paused: bench/paired.py) and
"reference_forwards_rounds"), ratio_end_to_end_vs_backbone (median of "ratio_rounds": each run over its in-run
backbone, or over the backbone around it where "ratio_kind_rounds" says "between runs"),
"ratio_rounds_between_runs", backbone_fraction_of_limit and, on a CPU, "loader_budget": the workers' CPU per
image allowed for 0.95 × the backbone at its in-run speed, beside what they spent), "loader_costs" (ms
per image of each loader stage, one thread) and "headline". The top-level keys of earlier
versions (matmul_gflops, backbone_sweep, backbone_at_batch, end_to_end, ratio_end_to_end_vs_backbone,
backbone_fraction_of_limit) stay, and are the fp32 block's; naive_loop, fast_paths and dynamic_resolution are
fp32 as before.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipeline.bench.config import BenchConfig
from pipeline.bench.loader_costs import format_loader_costs, loader_costs
from pipeline.bench.machine import (
    bench_precisions,
    capability,
    format_capability,
    format_limits,
    matmul_limits,
)
from pipeline.bench.paired import InRunReference
from pipeline.bench.results import BenchResult
from pipeline.bench.throughput import (
    backbone_throughput,
    dynamic_resolution,
    end_to_end_throughput,
    fast_paths,
    flops_per_image,
    naive_loop,
    plot,
    sweep,
)
from pipeline.bench.versus import format_versus, versus_naive
from pipeline.errors import ConfigError
from pipeline.extract.allocator import keep_freed_memory
from pipeline.extract.backbone import Backbone, create_backbone
from pipeline.extract.config import ExtractConfig
from pipeline.extract.device import (
    configure_threads,
    cpu_flags,
    resolve_device,
    resolve_precision,
    resolve_workers,
)
from pipeline.extract.pack import pack_folder
from pipeline.io.shards import list_image_files
from pipeline.io.tables import make_folder

log = logging.getLogger(__name__)

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
COPYDAYS = SHARED_DATA / "pimmi_copydays_like"
TARGET_RATIO = 0.95  # end-to-end over the backbone alone that the loader's budget is reckoned for
FAST_PATH_PHOTOS = 32  # real photos for the fast paths' fidelity
DYNAMIC_PHOTOS = 16  # real photos for dynamic resolution's cosine against fixed mode


def photo_folder(work: Path, count: int, photos: str | None = None) -> Path:
    """`photos` when given; else pimmi_copydays_like when present, else generated photo-sized JPEGs (512×341)."""
    if photos:
        return Path(photos)
    if COPYDAYS.is_dir():
        return COPYDAYS
    source = work / "generated"
    source.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        path = source / f"gen_{i:05d}.jpg"
        base = rng.integers(0, 255, (12, 16, 3)).astype(np.uint8)  # drawn always: file i is the same every run
        if not path.exists():
            Image.fromarray(base).resize((512, 341), Image.Resampling.BICUBIC).save(path, quality=90)
    return source


def prepare_shards(work: Path, limit: int, photos: str | None = None) -> tuple[str, list[Path]]:
    """`limit` real JPEGs packed as shards of 100 (packed once, reused); returns (shard list, files)."""
    source = photo_folder(work, limit, photos)
    files = [source / f for f in list_image_files(source)[0][:limit]]
    if not files:
        raise ConfigError(f"no images in {source} to measure with")
    shards = work / f"shards-{limit}"
    if not (shards / "shards.txt").exists():
        subset = work / f"subset-{limit}"
        subset.mkdir(parents=True, exist_ok=True)
        for f in files:
            link = subset / f"{f.parent.name}_{f.name}"
            if not link.exists():
                link.symlink_to(f.resolve())
        pack_folder(str(subset), str(shards), shard_size=100, prefix="bench", progress=False)
    return str(shards / "shards.txt"), files


def run_bench(cfg: BenchConfig, flags: set[str] | None = None) -> BenchResult:
    """Measure, write `bench.json` and `bench.png` into `cfg.out`, and return them with the record. `flags`: the CPU's
    kernel flags (None: read /proc/cpuinfo); they decide the default precisions, the int8 limit and `auto`."""
    work = make_folder(cfg.out)
    shards, files = prepare_shards(work, cfg.images, cfg.photos)
    ecfg = ExtractConfig(out=str(work / "unused"), shards=(shards,), model=cfg.model, weights=cfg.weights,
                         model_kwargs=cfg.model_kwargs, device=cfg.device, resolution=cfg.resolution,
                         precision="fp32", batch_size=cfg.batch_size, workers=cfg.workers, threads=cfg.threads,
                         compile="off", progress=False)
    device = resolve_device(ecfg.device)
    threads = configure_threads(device, ecfg.threads)
    flags = cpu_flags() if flags is None else flags
    auto, why = resolve_precision("auto", device, flags)
    precisions = bench_precisions(cfg.precisions, device, flags)
    cap = capability(device, flags)
    limits = matmul_limits(precisions, cfg.matmul_size, device, flags)
    base = create_backbone(ecfg, device)
    if device.type == "cpu":  # in force from the first CPU backbone on: every figure below ran with it
        cap["freed_memory_kept"] = keep_freed_memory()
    flops = flops_per_image(base)
    blocks = {}
    for precision in precisions:
        backbone = base if precision == "fp32" else create_backbone(replace(ecfg, precision=precision), device)
        blocks[precision] = measure_precision(cfg, replace(ecfg, precision=precision), backbone, flops,
                                              limits[precision]["gflops"])
        del backbone
    costs = loader_costs(base.preprocess, files[: cfg.loader_photos], cfg.batch_size)
    naive = naive_loop(cfg.model, files[: cfg.naive_images], cfg.resolution, ecfg)
    if device.type == "cpu":  # the forward gate's arithmetic: accelerators overlap the loader instead
        workers = resolve_workers(cfg.workers, device)  # as run_extract resolves them
        for block in blocks.values():
            block["loader_budget"] = loader_budget(block, cores=max(1, min(workers, threads)))
    fp32 = blocks["fp32"]
    result = {
        "model": cfg.model, "resolution": cfg.resolution, "batch_size": cfg.batch_size,
        "device": str(device), "threads": threads, "cpu": cap["cpu"], "torch": torch.__version__,
        "shards": shards, "capability": cap, "auto": {"precision": auto, "why": why},
        "matmul_size": cfg.matmul_size, "matmul_limits": limits, "flops_per_image": flops,
        "precisions": blocks,
        **{k: fp32[k] for k in ("matmul_gflops", "backbone_sweep", "backbone_at_batch", "end_to_end",
                                "ratio_end_to_end_vs_backbone", "ratio_rounds", "backbone_fraction_of_limit")},
        "loader_costs": costs,
        "naive_loop": naive,
        "ratio_naive_vs_backbone": naive["images_per_second"] / fp32["backbone_at_batch"]["images_per_second"],
    }
    result["headline"] = headline(result)
    if cfg.fast_paths:
        result["fast_paths"] = fast_paths(ecfg, base, files[:FAST_PATH_PHOTOS], cfg.batch_size) if cfg.compile else {}
        result["fast_path_photos"] = len(files[:FAST_PATH_PHOTOS])
        result["dynamic_resolution"] = dynamic_resolution(ecfg, files[:DYNAMIC_PHOTOS])
    if cfg.versus_naive:
        source = photo_folder(work, cfg.versus_naive, cfg.photos)
        files_all = [source / f for f in list_image_files(source)[0]]
        result["versus_naive"] = versus_naive(files_all, cfg.versus_naive, work, cfg.model, cfg.weights,
                                              cfg.model_kwargs, cfg.resolution, cfg.device, cfg.workers)
    (work / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, work / "bench.png")
    return BenchResult(work / "bench.json", work / "bench.png", result["headline"], result)


def measure_precision(cfg: BenchConfig, ecfg: ExtractConfig, backbone: Backbone, flops: float,
                      limit_gflops: float) -> dict:
    """One precision's block: the backbone sweep; then `cfg.rounds` end-to-end `run_extract`s, each between two
    measurements of the backbone alone at the comparison batch (B E B E B ...). This machine's speed drifts by
    up to 2× within seconds (another tenant on the core: the same work takes twice the cycles), so each
    round's ratio is its end-to-end over the backbone alone measured inside that run, between its batches
    with the loader's workers paused (bench/paired.py: the same seconds, so the drift cancels); a run in which
    none could be made (no /proc to find the workers) falls back to the mean of the backbone just before and
    just after it ("ratio_kind_rounds" says which). The block's ratio is the median of the rounds' ratios;
    every round is kept, and the ratios against the backbone around each run too ("ratio_rounds_between_runs").
    """
    swept = sweep(backbone, list(cfg.batch_sizes), warmup=cfg.warmup, repeats=cfg.repeats)
    at_batch = max(3, 64 // cfg.batch_size)
    first = backbone_throughput(backbone, cfg.batch_size, warmup=2, repeats=at_batch)
    around, ends = [first["images_per_second"]], []
    for _ in range(cfg.rounds):
        ends.append(end_to_end_throughput(ecfg, InRunReference(ecfg.batch_size, cfg.reference_every)))
        around.append(backbone_throughput(backbone, cfg.batch_size, warmup=1, repeats=at_batch)["images_per_second"])
    between = [e["images_per_second"] / ((around[i] + around[i + 1]) / 2) for i, e in enumerate(ends)]
    inside = [e["reference_images_per_second"] for e in ends]
    ratios = [e["images_per_second"] / ref if ref else b for e, ref, b in zip(ends, inside, between)]
    ref = float(np.median(around))
    e2e = {**ends[0], "images_per_second": float(np.median([e["images_per_second"] for e in ends])),
           "seconds": float(np.median([e["seconds"] for e in ends])),
           "rounds": [e["images_per_second"] for e in ends],
           # measured inside each run, so free of the drift between runs: the share of the wall spent in the
           # forward pass, and waiting for the loader (the first batch apart)
           "forward_share_rounds": [e["forward_seconds"] / e["seconds"] for e in ends],
           "loader_wait_share_rounds": [e["loader_wait_seconds"] / e["seconds"] for e in ends],
           "first_batch_seconds_rounds": [e["first_batch_seconds"] for e in ends],
           # what the loader's workers really spent per image in the run (their CPU time, all threads)
           "loader_cpu_ms_per_image_rounds": [e["loader_cpu_seconds"] / max(1, e["images"]) * 1e3 for e in ends],
           # ... of which while a forward pass ran on the same cores (what the forward gate keeps small)
           "loader_cpu_in_forward_ms_per_image_rounds": [e["loader_cpu_in_forward_seconds"] / max(1, e["images"])
                                                         * 1e3 for e in ends],
           # the backbone alone inside each run, and how many forwards measured it
           "reference_rounds": inside, "reference_forwards_rounds": [e["reference_forwards"] for e in ends]}
    return {
        "precision": ecfg.precision, "matmul_gflops": limit_gflops,
        "ceiling_images_per_second": limit_gflops * 1e9 / flops,
        "backbone_sweep": swept,
        "backbone_at_batch": {**first, "images_per_second": ref, "around_rounds": around},
        "end_to_end": e2e,
        "ratio_end_to_end_vs_backbone": float(np.median(ratios)),
        "ratio_rounds": ratios,
        "ratio_kind_rounds": ["in-run" if ref else "between runs" for ref in inside],
        "ratio_rounds_between_runs": between,
        "backbone_fraction_of_limit": ref * flops / 1e9 / limit_gflops,
    }


def loader_budget_ms(backbone_images_per_second: float, cores: int, ratio: float = TARGET_RATIO) -> float:
    """The CPU time per image a CPU run's loader workers may spend for end-to-end to reach `ratio` × the
    backbone alone. With the forward gate (extract/loader.py) the workers run only between forward passes, on
    all `cores` at once, so an image costs its forward time plus loader CPU / cores of wall time, and
    ratio = forward / (forward + loader / cores): budget = cores × forward × (1 / ratio - 1)."""
    if backbone_images_per_second <= 0 or cores < 1 or not 0 < ratio <= 1:
        raise ValueError("need a positive backbone rate, cores >= 1 and 0 < ratio <= 1")
    return cores * 1e3 / backbone_images_per_second * (1 / ratio - 1)


def loader_budget(block: dict, cores: int, ratio: float = TARGET_RATIO) -> dict:
    """A precision block's loader budget at its backbone's in-run speed (the median over the rounds; the
    backbone around the runs where no in-run forward was made), beside what the workers spent (median)."""
    e2e = block["end_to_end"]
    inside = [r for r in e2e["reference_rounds"] if r]
    rate = float(np.median(inside)) if inside else block["backbone_at_batch"]["images_per_second"]
    return {"ratio": ratio, "cores": cores, "backbone_images_per_second": rate,
            "ms_per_image": loader_budget_ms(rate, cores, ratio),
            "spent_ms_per_image": float(np.median(e2e["loader_cpu_ms_per_image_rounds"]))}


def headline(result: dict) -> str:
    """`auto → bf16 (why): end-to-end X images/s = R × backbone`, for the precision `auto` picks here."""
    auto = result["auto"]
    head = f"auto → {auto['precision']} ({auto['why']})"
    block = result["precisions"].get(auto["precision"])
    if block is None:
        return f"{head}: not measured (--precisions {','.join(result['precisions'])})"
    return (f"{head}: end-to-end {block['end_to_end']['images_per_second']:.2f} images/s = "
            f"{block['ratio_end_to_end_vs_backbone']:.3f} × backbone")


def format_bench(result: dict) -> str:
    """The record as the report prints it: the headline, the machine and its limits, per precision the sweep
    table and end-to-end against the backbone, then the naive loop, the fast paths and dynamic resolution."""
    flops = result["flops_per_image"]
    lines = [result["headline"], format_capability(result["capability"]),
             format_limits(result["matmul_limits"], result["matmul_size"], result["threads"])
             + f"; model {flops / 1e9:.3g} GFLOP/image"]
    for name, block in result["precisions"].items():
        at, e2e = block["backbone_at_batch"], block["end_to_end"]
        lines += [f"{name}: ceiling {block['ceiling_images_per_second']:.1f} images/s at the {name} limit",
                  f"  {'batch':>6} {'images/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'GFLOP/s':>8}"]
        for r in block["backbone_sweep"]:
            lines.append(f"  {r['batch_size']:>6} {r['images_per_second']:>9.2f} {r['p50_ms']:>8.0f} "
                         f"{r['p90_ms']:>8.0f} {r['gflops_achieved']:>8.0f}")
        lines += [f"  at batch {result['batch_size']}: backbone {at['images_per_second']:.2f} images/s (median of "
                  f"{_join(at['around_rounds'], '.2f')}) = {block['backbone_fraction_of_limit']:.0%} of the {name} "
                  f"limit",
                  f"  end-to-end extract: {e2e['images_per_second']:.2f} images/s over {e2e['images']} real JPEGs "
                  f"(median of {len(e2e['rounds'])} rounds: {_join(e2e['rounds'], '.2f')})"]
        inside = " ".join("-" if r is None else f"{r:.2f}" for r in e2e["reference_rounds"])
        kinds = ["" if k == "in-run" else "*" for k in block["ratio_kind_rounds"]]
        lines += [f"  backbone alone inside each run ({_join(e2e['reference_forwards_rounds'], 'd')} forwards "
                  f"between its batches, loader paused): {inside} images/s; end-to-end over it: "
                  + " ".join(f"{r:.3f}{k}" for r, k in zip(block["ratio_rounds"], kinds))
                  + f"; median = {block['ratio_end_to_end_vs_backbone']:.3f} × backbone"
                  + (" (* no in-run forward: over the backbone around the run)" if any(kinds) else ""),
                  f"  over the backbone measured before and after each run (drifts between them): "
                  f"{_join(block['ratio_rounds_between_runs'], '.3f')}"]
        if "forward_share_rounds" in e2e:  # records of earlier versions lack it
            lines.append(f"  inside each run: forward pass {_join(e2e['forward_share_rounds'], '.1%')} of the wall, "
                         f"waiting for the loader {_join(e2e['loader_wait_share_rounds'], '.1%')}, first batch "
                         f"{_join(e2e['first_batch_seconds_rounds'], '.2f')} s, the workers' CPU "
                         f"{_join(e2e['loader_cpu_ms_per_image_rounds'], '.2f')} ms per image"
                         + (f" ({_join(e2e['loader_cpu_in_forward_ms_per_image_rounds'], '.2f')} of it during forward "
                            f"passes)" if "loader_cpu_in_forward_ms_per_image_rounds" in e2e else ""))
        if "loader_budget" in block:
            b = block["loader_budget"]
            cores = f"{b['cores']} core{'s' if b['cores'] > 1 else ''}"
            lines.append(f"  loader budget for {b['ratio']:.2f} × backbone at {b['backbone_images_per_second']:.2f} "
                         f"images/s on {cores}: {b['ms_per_image']:.2f} ms of the workers' CPU per image; "
                         f"spent {b['spent_ms_per_image']:.2f} (median)")
    ref = result["backbone_at_batch"]["images_per_second"]
    if "loader_costs" in result:
        lines.append(format_loader_costs(result["loader_costs"]))
    naive = result["naive_loop"]
    lines.append(f"naive timm loop (fp32): {naive['images_per_second']:.2f} images/s = "
                 f"{result['ratio_naive_vs_backbone']:.3f} × fp32 backbone")
    for name, fp in result.get("fast_paths", {}).items():
        if "error" in fp:
            lines.append(f"{name:<8}: failed here ({fp['error']})")
        else:
            lines.append(f"{name:<8}: {fp['images_per_second']:.2f} images/s ({fp['images_per_second'] / ref:.2f}× "
                         f"fp32), CLS cosine vs fp32 min {fp['cls_cosine_min']:.5f} on {result['fast_path_photos']} "
                         f"real photos")
    if "dynamic_resolution" in result:
        dr, e2e = result["dynamic_resolution"], result["end_to_end"]
        lines.append(f"dynamic : {dr['images_per_second']:.2f} images/s end-to-end "
                     f"({dr['images_per_second'] / e2e['images_per_second']:.2f}× fixed, fp32), "
                     f"{dr['tokens_per_image_dynamic']:.0f} vs {dr['tokens_per_image_fixed']} patch tokens; CLS "
                     f"cosine vs fixed mode mean {dr['cls_cosine_vs_fixed_mean']:.4f} (different crops: not a "
                     f"fidelity loss)")
    if "versus_naive" in result:
        lines += format_versus(result["versus_naive"])
    return "\n".join(lines)


def _join(values: list[float], fmt: str) -> str:
    return " ".join(format(v, fmt) for v in values)
