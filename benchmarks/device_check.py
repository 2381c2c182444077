"""A device check in one command: backbone speed, end to end, parity, memory, index + k-NN on this machine.

    python3 benchmarks/device_check.py --wheels wheels --out dc      # a GPU machine (~20,000 photo-size JPEGs)
    python3 benchmarks/device_check.py --cpu --out dc                 # the CPU smoke run, in seconds

It makes its own webdataset shards (seeded, photo-like JPEGs made in code), runs the pipeline's own extract on
them with the model's weights random BY NAME (no weights can be downloaded on the machine; speed does not
depend on their values, and the output says "random weights"), and prints and writes one JSON
(`OUT/device_check.json`): the device, backbone images/s per batch size and precision, end-to-end images/s with
CPU decode (the workers used, the share of the wall the model waited for the loader), CPU-vs-device feature
parity (CLS and patch mean against CPU fp32, by `make parity`'s criteria), peak GPU memory, and an index +
k-NN graph over the extracted features. A figure the machine cannot measure is null, with its reason under
"reasons"; it is never made up. Exits 1 when parity fails.

The wheel folder. The bare machine's `python3` has torch, torchvision, timm, pyarrow, pillow, numpy and tqdm;
`--wheels DIR` installs what the pipeline needs beyond those and the machine lacks (WHEELS below) into a
temporary folder with `pip install --no-index --no-deps --find-links DIR --target TMP`, put first on
sys.path, before the pipeline is imported. Build the folder where there is a network, for the machine's
Python (3.X: its `python3 -V`), with the versions this project's environment pins (faiss-cpu and simplejpeg
ship manylinux_2_27 / 2_28 wheels only; `--platform manylinux_2_28_x86_64` also takes older tags):

    pip download --only-binary=:all: --no-deps --platform manylinux_2_28_x86_64 --python-version 3.X -d wheels \
        webdataset==1.0.2 faiss-cpu==1.15.1 simplejpeg==1.9.0 braceexpand==0.1.7 PyYAML==6.0.4
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# import name → the distribution pinned in this project's environment (what --wheels installs when missing)
WHEELS = {"webdataset": "webdataset==1.0.2", "faiss": "faiss-cpu==1.15.1", "simplejpeg": "simplejpeg==1.9.0",
          "braceexpand": "braceexpand==0.1.7", "yaml": "PyYAML==6.0.4"}
# the device decode against the CPU path, as measured on the shared photos with torchvision's CPU decoder
# (benchmarks/results/device_decode.json); nvJPEG may differ more: a failure here is a finding, not a bug
DECODE_P999_MAX = 4
DECODE_FULL_MAX = 3
DECODE_PHASH_BITS_MAX = 4
SHARD_SIZE = 1000


def install_wheels(folder: str | Path, wanted: dict[str, str] = WHEELS, target: str | Path | None = None) -> dict:
    """Install the distributions of `wanted` whose import name is missing here from the wheels in `folder`
    (no index, no dependencies) into `target` (a new temporary folder when None), put first on sys.path.
    Returns {"target": ..., "installed": [...], "present": [...]}."""
    missing = {name: dist for name, dist in wanted.items() if importlib.util.find_spec(name) is None}
    target = Path(target or tempfile.mkdtemp(prefix="device_check_wheels_"))
    if missing:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                        "--find-links", str(folder), "--target", str(target), *missing.values()], check=True)
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    return {"target": str(target), "installed": sorted(missing.values()),
            "present": sorted(d for n, d in wanted.items() if n not in missing)}


# ------------------------------------------------------------------------------------------ the test shards
def photo(seed: int, size: tuple[int, int]) -> bytes:
    """A photo-like JPEG: smooth colour fields (a coarse random grid, bicubic up), a few shapes, sensor noise."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    w, h = size
    coarse = rng.integers(0, 256, (max(2, h // 64), max(2, w // 64), 3), dtype=np.uint8)
    img = Image.fromarray(coarse).resize((w, h), Image.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(4):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        box = [x0, y0, x0 + int(rng.integers(4, w // 2 + 5)), y0 + int(rng.integers(4, h // 2 + 5))]
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    pixels = np.asarray(img, np.int16) + rng.normal(0, 6, (h, w, 3)).astype(np.int16)
    buf = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def write_shard(path: Path, first: int, count: int, size: tuple[int, int]) -> Path:
    with tarfile.open(path, "w") as tar:
        for i in range(first, first + count):
            data = photo(i, size)
            info = tarfile.TarInfo(f"{i:08d}.jpg")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def make_shards(folder: Path, images: int, size: tuple[int, int], processes: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(folder / f"shard-{s:05d}.tar", s * SHARD_SIZE, min(SHARD_SIZE, images - s * SHARD_SIZE), size)
            for s in range((images + SHARD_SIZE - 1) // SHARD_SIZE)]
    if processes <= 1 or len(jobs) == 1:
        return [write_shard(*job) for job in jobs]
    with ProcessPoolExecutor(processes) as pool:
        return list(pool.map(write_shard, *zip(*jobs)))


def subset_files(shard: Path, n: int, folder: Path) -> list[Path]:
    """The first `n` JPEGs of a shard as files (the parity subset)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    with tarfile.open(shard) as tar:
        for member in tar.getmembers()[:n]:
            files.append(folder / member.name)
            files[-1].write_bytes(tar.extractfile(member).read())
    return files


# ------------------------------------------------------------------------------------------------ the checks
def device_info(device) -> dict:
    import torch

    from pipeline.bench.machine import KERNEL_FLAGS, cpu_model_name
    from pipeline.extract.device import cpu_flags

    flags = cpu_flags()
    return {"device": str(device),
            "name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model_name(),
            "cpu": cpu_model_name(), "cpu_flags": [f for f in KERNEL_FLAGS if f in flags],
            "torch": torch.__version__}


def precisions(device) -> tuple[list[str], dict]:
    """The precisions the backbone is timed in here, and why any is left out."""
    from pipeline.extract.device import resolve_precision

    if device.type == "cuda":
        return ["bf16", "fp16"], {}
    auto = resolve_precision("auto", device)
    if auto[0] == "bf16":
        return ["fp32", "bf16"], {}
    return ["fp32"], {"bf16": f"not timed: {auto[1]}"}


def backbone_speed(cfg, device, batch_sizes: list[int], repeats: int) -> tuple[dict, dict]:
    from dataclasses import replace

    from pipeline.bench.throughput import backbone_throughput
    from pipeline.extract.backbone import create_backbone

    chosen, skipped = precisions(device)
    out: dict = {}
    for precision in chosen:
        backbone = create_backbone(replace(cfg, precision=precision), device)
        out[precision] = {str(bs): round(backbone_throughput(backbone, bs, warmup=2, repeats=repeats)
                                         ["images_per_second"], 2) for bs in batch_sizes}
        del backbone
    return out, skipped


def parity(cfg, device, files: list[Path]) -> dict:
    """CLS and patch mean of this device (fp32, and `auto` where it is another precision) against CPU fp32."""
    from dataclasses import replace

    import torch

    from pipeline.bench.parity import COSINE_MIN, MAE_MAX, TRIMMED_REL_MAX, compare
    from pipeline.bench.throughput import real_batch
    from pipeline.extract.backbone import create_backbone
    from pipeline.extract.device import resolve_precision

    cpu = torch.device("cpu")
    fp32 = replace(cfg, precision="fp32", compile="off")
    reference = create_backbone(fp32, cpu)
    images = real_batch(reference, files)

    def features(backbone):
        return {k: v.float().cpu().numpy() for k, v in backbone(images.to(backbone.device)).items()}

    ref = features(reference)
    auto = resolve_precision("auto", device)[0]
    runs = {f"{device.type} fp32 vs cpu fp32": fp32}
    if auto != "fp32":
        runs[f"{device.type} auto ({auto}) vs cpu fp32"] = replace(fp32, precision=auto)
    rows = []
    for name, run_cfg in runs.items():
        got = features(create_backbone(run_cfg, device))
        rows += [{"pair": name, "feature": f, **compare(ref[f], got[f])} for f in ("cls", "patch_mean")]
    return {"images": len(files), "rows": rows, "pass": all(r["pass"] for r in rows),
            "criteria": {"cosine_min_above": COSINE_MIN, "mae_below": MAE_MAX, "trimmed_rel_below": TRIMMED_REL_MAX}}


def end_to_end(cfg, device, decode: str = "cpu") -> dict:
    """One run_extract into its own folder (`decode`: cpu, or gpu: in batches on the device)."""
    from dataclasses import replace

    from pipeline.extract.device import resolve_precision, resolve_workers
    from pipeline.extract.runner import run_extract

    stats = run_extract(replace(cfg, decode=decode, out=f"{cfg.out}-{decode}"))
    return {"images": stats.images, "failures": stats.failures, "seconds": round(stats.seconds, 3),
            "images_per_second": round(stats.images_per_second, 2),
            "workers": resolve_workers(cfg.workers, device), "batch_size": cfg.batch_size,
            "precision": resolve_precision(cfg.precision, device)[0],
            "loader_wait_share": round(stats.loader_wait_share, 4),
            "forward_share": round(stats.forward_seconds / stats.seconds, 4) if stats.seconds else None,
            "decode": decode}


def decode_pixels(cfg, device, files: list[Path]) -> dict:
    """The device decode's model input and pHashes against the CPU path's on the same JPEGs (draft on, the
    default, and off); `pass`: within the bounds measured on the shared photos with torchvision's CPU decoder."""
    import torch

    from pipeline.bench.decode_parity import measure
    from pipeline.extract.backbone import create_backbone

    pre = create_backbone(cfg, torch.device("cpu")).preprocess
    datas = [f.read_bytes() for f in files]
    draft, full = measure(datas, pre, True, device), measure(datas, pre, False, device)
    ok = (draft["pixels"]["p99.9"] <= DECODE_P999_MAX and full["pixels"]["max"] <= DECODE_FULL_MAX
          and max(draft["phash_bits"]["max"], full["phash_bits"]["max"]) <= DECODE_PHASH_BITS_MAX)
    return {"images": len(files), "draft": draft, "no_draft": full, "pass": ok,
            "criteria": {"draft_p99.9_at_most": DECODE_P999_MAX, "no_draft_max_at_most": DECODE_FULL_MAX,
                         "phash_bits_at_most": DECODE_PHASH_BITS_MAX}}


def index_and_graph(features: Path, work: Path, k: int) -> dict:
    from pipeline.bench.machine import faiss_build
    from pipeline.index.build import IndexConfig, build_index, load_index
    from pipeline.index.knn import build_graph
    from pipeline.roots.features import open_features

    t0 = time.perf_counter()
    record = build_index(IndexConfig(features=str(features), out=str(work / "index"), progress=False))
    index_s = time.perf_counter() - t0
    fs = open_features(str(features))
    t1 = time.perf_counter()
    build_graph(fs, load_index(work / "index").index, record["feature"], work / "knn", k=k, progress=False)
    graph_s = time.perf_counter() - t1
    return {"vectors": record["count"], "dim": record["dim"], "factory": record["factory"], "faiss": faiss_build(),
            "index_seconds": round(index_s, 3), "graph_k": k, "graph_seconds": round(graph_s, 3),
            "graph_vectors_per_second": round(record["count"] / graph_s, 1) if graph_s > 0 else None}


def peak_memory(device) -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated(device) / 2**30, 3) if device.type == "cuda" else None


# ------------------------------------------------------------------------------------------------ the run
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cpu", action="store_true", help="run on the CPU at a tiny size (the smoke run)")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                    / "dinocurate" / "device_check", help="folder of device_check.json (default: the user's cache)")
    ap.add_argument("--wheels", type=Path, help="folder of wheels for what this machine lacks (see above)")
    ap.add_argument("--images", type=int, help="JPEGs to make (default 20000; --cpu: 64)")
    ap.add_argument("--size", default=None, help="W,H of the JPEGs (default 640,480; --cpu: 96,72)")
    ap.add_argument("--model", default="vit_small_patch14_reg4_dinov2.lvd142m")
    ap.add_argument("--model-kwargs", default=None,
                    help="timm kwargs, e.g. depth=2,embed_dim=64,num_heads=2 (--cpu default: that, img_size=56)")
    ap.add_argument("--resolution", type=int, help="model input side (default 224; --cpu: 56)")
    ap.add_argument("--batch-sizes", default=None, help="backbone sweep (default 32,64,128,256; --cpu: 4,16)")
    ap.add_argument("--batch-size", type=int, help="end to end (default 128; --cpu: 16)")
    ap.add_argument("--workers", type=int, help="loader workers end to end (default: the pipeline's)")
    ap.add_argument("--parity-images", type=int, default=16)
    ap.add_argument("--knn", type=int, default=10, help="k of the k-NN graph")
    ap.add_argument("--repeats", type=int, help="timed batches per size (default 10; --cpu: 2)")
    args = ap.parse_args(argv)
    tiny = args.cpu
    args.images = args.images or (64 if tiny else 20000)
    args.size = tuple(int(v) for v in (args.size or ("96,72" if tiny else "640,480")).split(","))
    if args.model_kwargs is None and tiny:
        args.model_kwargs = "depth=2,embed_dim=64,num_heads=2,img_size=56"
    args.resolution = args.resolution or (56 if tiny else 224)
    args.batch_sizes = [int(b) for b in (args.batch_sizes or ("4,16" if tiny else "32,64,128,256")).split(",")]
    args.batch_size = args.batch_size or (16 if tiny else 128)
    args.repeats = args.repeats or (2 if tiny else 10)
    return args


def run(args: argparse.Namespace) -> dict:
    import torch

    if args.cpu:
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        raise SystemExit("error: no CUDA device here; run with --cpu for the CPU check")
    with tempfile.TemporaryDirectory(prefix="device_check_") as tmp:
        return checks(args, device, Path(tmp))


def checks(args: argparse.Namespace, device, work: Path) -> dict:
    """Every check, its data made and kept in `work` (a temporary folder)."""
    import torch

    from pipeline.extract.config import ExtractConfig, parse_model_kwargs

    reasons: dict[str, str] = {}
    t0 = time.perf_counter()
    shards = make_shards(work / "shards", args.images, args.size, processes=min(16, os.cpu_count() or 1))
    generate_s = time.perf_counter() - t0
    cfg = ExtractConfig(out=str(work / "features"), shards=tuple(str(s) for s in shards), model=args.model,
                        weights="random", model_kwargs=parse_model_kwargs(args.model_kwargs or ""),
                        resolution=args.resolution, device=device.type, batch_size=args.batch_size,
                        workers=args.workers, compile="off", progress=False)
    backbone, skipped = backbone_speed(cfg, device, args.batch_sizes, args.repeats)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    e2e = end_to_end(cfg, device)
    e2e_gpu = end_to_end(cfg, device, "gpu")
    memory = peak_memory(device)
    if memory is None:
        reasons["peak_gpu_memory_gib"] = "no GPU: the check ran on the CPU"
    files = subset_files(shards[0], args.parity_images, work / "parity")
    check = parity(cfg, device, files)
    pixels = decode_pixels(cfg, device, files)
    if device.type == "cpu":
        reasons["end_to_end_gpu_decode"] = "no GPU: the device decode ran on the CPU (torchvision's decoder)"
    reasons["gpu_busy_share"] = ("no GPU: the check ran on the CPU" if device.type == "cpu"
                                 else "approximated by forward_share (the share of the wall spent queuing and "
                                      "running forward passes and device decodes)")
    result = {
        "device": device_info(device),
        "model": {"name": args.model, "weights": "random weights (by name; no download)",
                  "model_kwargs": args.model_kwargs, "resolution": args.resolution},
        "shards": {"images": args.images, "size": list(args.size), "shards": len(shards),
                   "generate_seconds": round(generate_s, 2)},
        "backbone_images_per_second": backbone, "backbone_not_timed": skipped,
        "end_to_end_cpu_decode": e2e, "end_to_end_gpu_decode": e2e_gpu,
        "gpu_busy_share": e2e_gpu["forward_share"] if device.type == "cuda" else None,
        "parity": check, "decode_pixel_parity": pixels, "peak_gpu_memory_gib": memory,
        "index": index_and_graph(Path(f"{cfg.out}-cpu"), work, args.knn),
        "wall_seconds": None, "reasons": reasons,
    }
    result["wall_seconds"] = round(time.perf_counter() - t0, 2)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wheels = install_wheels(args.wheels) if args.wheels else None
    args.out.mkdir(parents=True, exist_ok=True)
    result = run(args)
    result["wheels"] = wheels
    if wheels is None:
        result["reasons"]["wheels"] = "no --wheels given: everything was importable here"
    text = json.dumps(result, indent=2)
    print(text)
    (args.out / "device_check.json").write_text(text + "\n")
    passed = result["parity"]["pass"] and result["decode_pixel_parity"]["pass"]
    print(f"device check on {result['device']['name']} ({result['model']['weights']}): feature parity "
          f"{'PASS' if result['parity']['pass'] else 'FAIL'}, decode pixel parity "
          f"{'PASS' if result['decode_pixel_parity']['pass'] else 'FAIL'}", file=sys.stderr)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
