"""`python -m jobs.bench`: backbone-only vs end-to-end images/s at the same model, resolution and batch."""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

from jobs._cli import run_job

REPO = Path(__file__).resolve().parents[1]
COPYDAYS = REPO.parent / "shared" / "data" / "pimmi_copydays_like"


def prepare_shards(work: Path, limit: int | None) -> str:
    """Shards of real JPEGs (pimmi_copydays_like when present), else of generated photo-sized JPEGs."""
    from pipeline.pack import pack_folder

    shards = work / "shards"
    if (shards / "shards.txt").exists():
        return str(shards / "shards.txt")
    if COPYDAYS.is_dir():
        source = COPYDAYS
    else:
        import numpy as np
        from PIL import Image

        source = work / "generated"
        source.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        for i in range(limit or 400):
            base = rng.integers(0, 255, (12, 16, 3)).astype(np.uint8)
            img = Image.fromarray(base).resize((512, 341), Image.Resampling.BICUBIC)
            img.save(source / f"gen_{i:05d}.jpg", quality=90)
    pack_folder(str(source), str(shards), shard_size=200, prefix="bench", progress=False)
    return str(shards / "shards.txt")


def main(argv: list[str] | None = None) -> None:
    from pipeline.config import DEFAULT_MODEL

    p = argparse.ArgumentParser(prog="python -m jobs.bench", description=__doc__)
    p.add_argument("--out", default="bench_out", help="folder for shards and bench.json (default: %(default)s)")
    p.add_argument("--shards", default=None, help="shards to read (default: pimmi_copydays_like packed, or "
                                                  "generated 512x341 JPEGs)")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--weights", default="random", help="throughput does not depend on the weights' values")
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--log-level", default="WARNING")
    args = p.parse_args(argv)

    def job() -> int:
        import torch

        from pipeline.backbone import create_backbone
        from pipeline.bench import backbone_throughput, end_to_end_throughput, matmul_gflops
        from pipeline.config import ExtractConfig
        from pipeline.device import configure_threads, resolve_device

        work = Path(args.out)
        work.mkdir(parents=True, exist_ok=True)
        shards = args.shards or prepare_shards(work, None)
        cfg = ExtractConfig(out=str(work / "unused"), shards=(shards,), model=args.model, weights=args.weights,
                            resolution=args.resolution, batch_size=args.batch_size, workers=args.workers,
                            threads=args.threads)
        device = resolve_device(cfg.device)
        threads = configure_threads(device, cfg.threads)
        backbone = create_backbone(cfg, device)
        limit = matmul_gflops()
        alone = backbone_throughput(backbone, args.batch_size)
        e2e = end_to_end_throughput(cfg)
        alone_after = backbone_throughput(backbone, args.batch_size)  # bracket e2e: the machine is noisy
        ref = (alone["images_per_second"] + alone_after["images_per_second"]) / 2
        result = {"model": args.model, "resolution": args.resolution, "batch_size": args.batch_size,
                  "device": str(device), "threads": threads, "cpu": platform.processor() or platform.machine(),
                  "torch": torch.__version__, "shards": shards, "matmul_gflops": limit, "backbone_before": alone,
                  "backbone_after": alone_after, "end_to_end": e2e,
                  "ratio_end_to_end_vs_backbone": e2e["images_per_second"] / ref}
        (work / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
        print(f"machine limit: {limit:.0f} GFLOP/s (fp32 {2048}x{2048} matmul, {threads} threads)")
        print(f"{'what':<28}{'images/s':>10}")
        print(f"{'backbone alone (before)':<28}{alone['images_per_second']:>10.2f}   p50 {alone['p50_ms']:.0f} ms")
        print(f"{'end-to-end extract':<28}{e2e['images_per_second']:>10.2f}   {e2e['images']} images")
        print(f"{'backbone alone (after)':<28}{alone_after['images_per_second']:>10.2f}")
        print(f"ratio end-to-end / backbone: {result['ratio_end_to_end_vs_backbone']:.3f}   -> {work}/bench.json")
        return 0

    run_job(job, args.log_level)


if __name__ == "__main__":
    main()
