"""CPU int8 against bf16: static PT2E (x86 inductor quantiser), torchao weight-only and dynamic int8, in one process.

    .venv/bin/python benchmarks/int8.py                      # ViT-S/14-reg4 at 224, batch 16, 3 rounds (~6 min)
    .venv/bin/python benchmarks/int8.py --model-kwargs depth=1,img_size=56 --resolution 56 --photos 4 \
        --batch 2 --rounds 1 --no-compile     # the smoke run

Every variant runs the same model (random weights: speed does not depend on their values) on the same real
photos (decoded and preprocessed by the pipeline), normalised as the pipeline does on the device:
- `bf16_eager`: what `--precision bf16` runs (autocast, eager);
- `bf16_compile`: the same under `torch.compile` (what `--compile` adds);
- `int8_static`: PT2E static quantisation with torchao's X86InductorQuantizer (calibrated on the first photos;
  measured on the others), the rest in bf16 autocast, compiled with Inductor's freezing: the int8 path the
  x86 Inductor back end is built for;
- `int8_weight_only`, `int8_dynamic`: torchao's `quantize_` with Int8WeightOnlyConfig /
  Int8DynamicActivationInt8WeightConfig, bf16 autocast, compiled.
Speed: images/s at `--batch`, every variant once per round, rounds interleaved (the machine is shared:
compare within a round); the figure is the median over rounds, and each variant's ratio to bf16_eager and to
bf16_compile is the median of the per-round ratios. Fidelity: CLS cosine (min, mean) against fp32 eager on
the held-out photos. Writes `int8.json` into `--out`. Needs torchao (in the dev extra).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

VARIANTS = ("bf16_eager", "bf16_compile", "int8_static", "int8_weight_only", "int8_dynamic")


class ForwardFeatures:
    """A module view of `model.forward_features`, for export and compile."""

    def __new__(cls, model):
        import torch

        class _FF(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, x):
                return self.m.forward_features(x)

        return _FF(model).eval()


def photos(folder: Path | None, n: int) -> list[Path]:
    from pipeline.bench.run import COPYDAYS
    from pipeline.io.shards import list_image_files

    source = folder or COPYDAYS
    return [source / f for f in list_image_files(source)[0][:n]] if source.is_dir() else []


def inputs(args: argparse.Namespace):
    """(fp32 model, normalised batch of the photos (or seeded noise when none are found), cfg)."""
    import torch

    from pipeline.bench.throughput import real_batch
    from pipeline.extract.backbone import create_backbone
    from pipeline.extract.config import ExtractConfig, parse_model_kwargs

    cfg = ExtractConfig(out="unused", shards=("unused",), model=args.model, weights="random",
                        model_kwargs=parse_model_kwargs(args.model_kwargs), resolution=args.resolution,
                        precision="fp32", progress=False)
    base = create_backbone(cfg, torch.device("cpu"))
    files = photos(args.photos_dir, args.photos)
    if files:
        images = real_batch(base, files)
    else:
        gen = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (args.photos, *base.preprocess.input_size), dtype=torch.uint8, generator=gen)
    mean = torch.tensor(base.preprocess.mean).view(1, 3, 1, 1)
    std = torch.tensor(base.preprocess.std).view(1, 3, 1, 1)
    return base.model.eval(), ((images.float() / 255) - mean) / std, len(files)


def build(name: str, model, calib, compile_: bool):
    """A callable batch → tokens for variant `name`."""
    import torch

    ff = ForwardFeatures(copy.deepcopy(model))
    if name == "int8_static":
        import torch._inductor.config as inductor_config
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        inductor_config.freezing = True
        quantizer = xiq.X86InductorQuantizer()
        quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
        with torch.no_grad():
            prepared = prepare_pt2e(torch.export.export(ff, (calib,)).module(), quantizer)
            prepared(calib)
            ff = convert_pt2e(prepared)
    elif name in ("int8_weight_only", "int8_dynamic"):
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_

        quantize_(ff, Int8WeightOnlyConfig() if name == "int8_weight_only" else Int8DynamicActivationInt8WeightConfig())
    if compile_ and name != "bf16_eager":
        ff = torch.compile(ff)

    def run(x):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            if name != "int8_static" or len(x) == len(calib):
                return ff(x)
            # the exported graph has the calibration batch's shape: other sizes go through in padded chunks
            n, parts = len(calib), []
            for s in range(0, len(x), n):
                chunk = x[s:s + n]
                pad = n - len(chunk)
                parts.append(ff(torch.cat([chunk, chunk[:1].expand(pad, *chunk.shape[1:])]) if pad else chunk)[
                    :len(chunk)])
            return torch.cat(parts)

    return run


def images_per_second(fn, x, repeats: int) -> float:
    fn(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return len(x) / statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="vit_small_patch14_reg4_dinov2.lvd142m")
    p.add_argument("--model-kwargs", default=None, help="e.g. depth=1 (a small model for the smoke run)")
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--photos", type=int, default=48, help="real photos: the first half calibrates (at most "
                                                           "--batch), the rest measures fidelity")
    p.add_argument("--photos-dir", type=Path, default=None, help="default: ../shared/data/pimmi_copydays_like")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=4, help="timed batches per variant per round")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--no-compile", action="store_true", help="eager only (the smoke run: compiling takes minutes)")
    p.add_argument("--out", type=Path, default=Path("bench_out/int8"))
    args = p.parse_args(argv)

    import torch

    from pipeline.bench.machine import capability, format_capability
    from pipeline.extract.device import configure_threads, cpu_flags

    device = torch.device("cpu")
    threads = configure_threads(device, None)
    flags = cpu_flags()
    model, x, n_photos = inputs(args)
    half = max(1, len(x) // 2)
    calib, held = x[:min(half, args.batch)], x[half:] if len(x) > 1 else x
    bench_x = x[:args.batch] if len(x) >= args.batch else x.repeat((args.batch + len(x) - 1) // len(x), 1, 1, 1)[
        :args.batch]
    with torch.inference_mode():
        reference = model.forward_features(held)[:, 0].float()
    names = [v for v in args.variants.split(",") if v and not (args.no_compile and v == "bf16_compile")]
    unknown = set(names) - set(VARIANTS)
    if unknown:
        p.error(f"unknown variants {sorted(unknown)}; choose from {VARIANTS}")
    result: dict = {"model": args.model, "model_kwargs": args.model_kwargs, "resolution": args.resolution,
                    "batch": args.batch, "threads": threads, "photos": n_photos, "compiled": not args.no_compile,
                    "capability": capability(device, flags), "variants": {}}
    runners = {}
    for name in names:
        t0 = time.perf_counter()
        try:
            runners[name] = build(name, model, calib, not args.no_compile)
            cls = runners[name](held)[:, 0].float()
        except Exception as exc:  # noqa: BLE001 - a path this machine cannot run is reported, not fatal
            result["variants"][name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            runners.pop(name, None)
            continue
        cos = torch.nn.functional.cosine_similarity(cls, reference)
        result["variants"][name] = {"build_seconds": time.perf_counter() - t0, "cls_cosine_min": float(cos.min()),
                                    "cls_cosine_mean": float(cos.mean()), "rounds": []}
        print(f"{name}: ready in {time.perf_counter() - t0:.1f} s, CLS cosine vs fp32 min {float(cos.min()):.5f}",
              flush=True)
    for r in range(args.rounds):
        line = []
        for name, fn in runners.items():
            ips = images_per_second(fn, bench_x, args.repeats)
            result["variants"][name]["rounds"].append(ips)
            line.append(f"{name} {ips:.1f}")
        print(f"round {r + 1}: " + ", ".join(line) + " img/s", flush=True)
    for name, block in result["variants"].items():
        if "rounds" not in block:
            continue
        block["images_per_second"] = statistics.median(block["rounds"])
        for base in ("bf16_eager", "bf16_compile"):
            if base in runners and base != name:
                ratios = [a / b for a, b in zip(block["rounds"], result["variants"][base]["rounds"])]
                block[f"ratio_vs_{base}"] = statistics.median(ratios)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "int8.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(format_capability(result["capability"]))
    for name, block in result["variants"].items():
        if "error" in block:
            print(f"{name:18s} error: {block['error']}")
            continue
        ratios = ", ".join(f"{k[9:]} ×{v:.2f}" for k, v in block.items() if k.startswith("ratio_vs_"))
        print(f"{name:18s} {block['images_per_second']:7.1f} img/s  CLS cos min {block['cls_cosine_min']:.5f}  "
              f"{ratios}")
    print(f"wrote {args.out / 'int8.json'}")
    return result


if __name__ == "__main__":
    main()
