"""`python -m jobs.parity`: do two ways of computing the features agree? The seed report's PASS/FAIL table."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from jobs._cli import run_job

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO.parent / "shared" / "data" / "unsplash_coenm"


def main(argv: list[str] | None = None) -> None:
    from pipeline.extract.config import DEFAULT_MODEL

    p = argparse.ArgumentParser(prog="python -m jobs.parity", description=__doc__,
                                epilog="criteria: cosine > 0.999, mean absolute error < 0.01, trimmed (top 5 %% "
                                       "removed) mean relative error < 1 %%, per feature (cls, patch_mean)")
    p.add_argument("--out", default="bench_out", help="folder for parity.json (default: %(default)s)")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--weights", default="random")
    p.add_argument("--model-kwargs", default=None)
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--images", type=int, default=16, help="real photos compared (default: %(default)s)")
    p.add_argument("--compile", action="store_true", help="also torch.compile vs eager (~1 min)")
    p.add_argument("--log-level", default="WARNING")
    args = p.parse_args(argv)

    def job() -> int:
        import numpy as np
        import torch
        from PIL import Image

        from pipeline.extract.backbone import create_backbone
        from pipeline.bench.throughput import real_batch
        from pipeline.extract.config import ExtractConfig, parse_model_kwargs
        from pipeline.extract.device import resolve_device
        from pipeline.bench.parity import format_table, run_parity

        cfg = ExtractConfig(out="unused", images="unused", model=args.model, weights=args.weights,
                            model_kwargs=parse_model_kwargs(args.model_kwargs), resolution=args.resolution,
                            device="cpu")
        work = Path(args.out)
        work.mkdir(parents=True, exist_ok=True)
        if PHOTOS.is_dir():
            files, source = sorted(PHOTOS.glob("*.jpg"))[: args.images], str(PHOTOS)
        else:
            rng = np.random.default_rng(0)
            files, source = [], "generated"
            for i in range(args.images):
                f = work / f"parity_{i}.jpg"
                Image.fromarray(rng.integers(0, 255, (9, 12, 3), dtype=np.uint8)).resize((400, 300)).save(f)
                files.append(f)
        images = real_batch(create_backbone(cfg, torch.device("cpu")), files)
        device = resolve_device("auto")
        rows = run_parity(cfg, images, include_compile=args.compile,
                          accelerator=device if device.type != "cpu" else None)
        print(f"parity of {args.model} ({args.weights} weights) at {args.resolution} px on {len(files)} photos "
              f"from {source}")
        print(format_table(rows))
        if device.type == "cpu":
            print("(no accelerator here: the CPU-vs-device pair runs where one is present)")
        (work / "parity.json").write_text(json.dumps({"rows": rows, "photos": source, "model": args.model,
                                                      "weights": args.weights}, indent=2) + "\n")
        print(f"-> {work}/parity.json")
        return 0 if all(r["pass"] for r in rows) else 1

    run_job(job, args.log_level)


if __name__ == "__main__":
    main()
