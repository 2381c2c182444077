"""`python -m jobs.bench`: images/s against the machine's limit, in one run (ratios hold on a noisy machine)."""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

from jobs._cli import run_job

REPO = Path(__file__).resolve().parents[1]
COPYDAYS = REPO.parent / "shared" / "data" / "pimmi_copydays_like"


def photo_folder(work: Path, count: int) -> Path:
    """pimmi_copydays_like when present, else generated photo-sized JPEGs (512×341)."""
    if COPYDAYS.is_dir():
        return COPYDAYS
    import numpy as np
    from PIL import Image

    source = work / "generated"
    source.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        path = source / f"gen_{i:05d}.jpg"
        if not path.exists():
            base = rng.integers(0, 255, (12, 16, 3)).astype(np.uint8)
            Image.fromarray(base).resize((512, 341), Image.Resampling.BICUBIC).save(path, quality=90)
    return source


def prepare_shards(work: Path, limit: int) -> tuple[str, list[Path]]:
    """`limit` real JPEGs packed as shards of 100 (packed once, reused); returns (shard list, files)."""
    from pipeline.io.pack import pack_folder
    from pipeline.io.shards import list_image_files

    source = photo_folder(work, limit)
    files = [source / f for f in list_image_files(source)[0][:limit]]
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


def main(argv: list[str] | None = None) -> None:
    from pipeline.extract.config import DEFAULT_MODEL

    p = argparse.ArgumentParser(prog="python -m jobs.bench", description=__doc__,
                                epilog="defaults fit in ~6 minutes on a 2-core CPU; the seed report's format is "
                                       "--warmup 10 --repeats 50")
    p.add_argument("--out", default="bench_out", help="folder for shards, bench.json, bench.png (default: %(default)s)")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--weights", default="random", help="throughput does not depend on the weights' values")
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=16, help="batch of the end-to-end comparison")
    p.add_argument("--batch-sizes", default="1,2,4,8,16,32", help="backbone sweep")
    p.add_argument("--images", type=int, default=400, help="real JPEGs for the end-to-end run (default: 400)")
    p.add_argument("--naive-images", type=int, default=64)
    p.add_argument("--warmup", type=int, default=None, help="per batch size (default: 2)")
    p.add_argument("--repeats", type=int, default=None, help="per batch size (default: ~64 images' worth)")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-fast-paths", dest="fast_paths", action="store_false", help="skip int8 / compile")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="skip torch.compile (~1 min)")
    p.add_argument("--log-level", default="WARNING")
    args = p.parse_args(argv)

    def job() -> int:
        import torch

        from pipeline.extract.backbone import create_backbone
        from pipeline.bench.throughput import (backbone_throughput, dynamic_resolution, end_to_end_throughput, fast_paths,
                                    flops_per_image, matmul_gflops, naive_loop, plot, sweep)
        from pipeline.extract.config import ExtractConfig
        from pipeline.extract.device import configure_threads, resolve_device

        work = Path(args.out)
        work.mkdir(parents=True, exist_ok=True)
        shards, files = prepare_shards(work, args.images)
        cfg = ExtractConfig(out=str(work / "unused"), shards=(shards,), model=args.model, weights=args.weights,
                            resolution=args.resolution, batch_size=args.batch_size, workers=args.workers,
                            threads=args.threads)
        device = resolve_device(cfg.device)
        threads = configure_threads(device, cfg.threads)
        backbone = create_backbone(cfg, device)
        flops = flops_per_image(backbone)
        limit = matmul_gflops()
        sizes = [int(b) for b in args.batch_sizes.split(",")]
        swept = sweep(backbone, sizes, warmup=args.warmup, repeats=args.repeats)
        before = backbone_throughput(backbone, args.batch_size, warmup=2, repeats=max(3, 64 // args.batch_size))
        e2e = end_to_end_throughput(cfg)
        after = backbone_throughput(backbone, args.batch_size, warmup=1, repeats=max(3, 64 // args.batch_size))
        naive = naive_loop(args.model, files[: args.naive_images], args.resolution, cfg)
        ref = (before["images_per_second"] + after["images_per_second"]) / 2
        result = {
            "model": args.model, "resolution": args.resolution, "batch_size": args.batch_size,
            "device": str(device), "threads": threads, "cpu": platform.processor() or platform.machine(),
            "torch": torch.__version__, "shards": shards, "matmul_gflops": limit, "flops_per_image": flops,
            "backbone_sweep": swept,
            "backbone_at_batch": {**before, "images_per_second": ref, "before": before["images_per_second"],
                                  "after": after["images_per_second"]},
            "end_to_end": e2e, "naive_loop": naive,
            "ratio_end_to_end_vs_backbone": e2e["images_per_second"] / ref,
            "ratio_naive_vs_backbone": naive["images_per_second"] / ref,
            "backbone_fraction_of_limit": ref * flops / 1e9 / limit,
        }
        if args.fast_paths:
            result["fast_paths"] = fast_paths(cfg, backbone, files[:32], args.batch_size, args.compile)
            result["dynamic_resolution"] = dynamic_resolution(cfg, files[:16])
        (work / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
        plot(result, work / "bench.png")
        print(f"machine limit: {limit:.0f} GFLOP/s (fp32 2048² matmul, {threads} threads); model "
              f"{flops / 1e9:.1f} GFLOP/image → ceiling {limit * 1e9 / flops:.1f} images/s")
        print(f"{'batch':>6} {'images/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'GFLOP/s':>8}")
        for r in swept:
            print(f"{r['batch_size']:>6} {r['images_per_second']:>9.2f} {r['p50_ms']:>8.0f} {r['p90_ms']:>8.0f} "
                  f"{r['gflops_achieved']:>8.0f}")
        print(f"at batch {args.batch_size}: backbone {ref:.2f} images/s (before {before['images_per_second']:.2f}, "
              f"after {after['images_per_second']:.2f}) = {result['backbone_fraction_of_limit']:.0%} of the limit")
        print(f"end-to-end extract: {e2e['images_per_second']:.2f} images/s over {e2e['images']} real JPEGs "
              f"= {result['ratio_end_to_end_vs_backbone']:.3f} × backbone")
        print(f"naive timm loop:    {naive['images_per_second']:.2f} images/s = "
              f"{result['ratio_naive_vs_backbone']:.3f} × backbone")
        for name, fp in result.get("fast_paths", {}).items():
            if "error" in fp:
                print(f"{name:<8}: failed here ({fp['error']})")
            else:
                print(f"{name:<8}: {fp['images_per_second']:.2f} images/s ({fp['images_per_second'] / ref:.2f}×), "
                      f"CLS cosine vs fp32 min {fp['cls_cosine_min']:.5f} on {len(files[:32])} real photos")
        if "dynamic_resolution" in result:
            dr = result["dynamic_resolution"]
            print(f"dynamic : {dr['images_per_second']:.2f} images/s end-to-end "
                  f"({dr['images_per_second'] / e2e['images_per_second']:.2f}× fixed), "
                  f"{dr['tokens_per_image_dynamic']:.0f} vs {dr['tokens_per_image_fixed']} patch tokens; CLS cosine vs "
                  f"fixed mode mean {dr['cls_cosine_vs_fixed_mean']:.4f} (different crops: not a fidelity loss)")
        print(f"-> {work}/bench.json, {work}/bench.png")
        return 0

    run_job(job, args.log_level)


if __name__ == "__main__":
    main()
