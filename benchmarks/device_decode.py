"""The device JPEG decode (pipeline/extract/device_decode.py) against the CPU path, pixel by pixel and bit by bit.

    .venv/bin/python benchmarks/device_decode.py                     # shared photos, --device cpu (~1 min)
    .venv/bin/python benchmarks/device_decode.py --device cuda       # nvJPEG, on a GPU machine
    .venv/bin/python benchmarks/device_decode.py --seeded 4 --copydays 0 --out /tmp/x   # the smoke run

For each JPEG the device path takes (probe_jpeg), the model input (224 px, `--crop-pct`) and the four pHashes are
made by both paths, with JPEG draft on (the default) and off: |device - CPU| over all pixels (max, mean, 99th
and 99.9th percentiles), pHash bit differences (max, mean), the CPU path's own draft-vs-full-decode difference
for scale, and ms/image of each path in this one process (on `--device cpu` that is not a GPU figure).
Writes `device_decode.json` into `--out`.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipeline.bench.decode_parity import MAX_PIXELS, measure  # noqa: E402
from pipeline.extract.device_decode import probe_jpeg  # noqa: E402
from pipeline.extract.preprocess import Preprocess  # noqa: E402


def seeded(n: int) -> list[bytes]:
    """n photo-like JPEGs made here (smooth fields, hard edges, noise), sizes that draft at 1, 2, 4 and 8."""
    sizes = [(400, 300), (1100, 700), (2200, 1500), (4032, 3024)]
    out = []
    for i in range(n):
        rng = np.random.default_rng(i)
        w, h = sizes[i % len(sizes)]
        base = Image.fromarray(rng.integers(0, 256, (9, 12, 3), dtype=np.uint8)).resize((w, h),
                                                                                       Image.Resampling.BICUBIC)
        arr = np.asarray(base, dtype=np.float64) + rng.normal(0, 6, (h, w, 3))
        buf = io.BytesIO()
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def shared(data: Path, copydays: int) -> list[bytes]:
    files = sorted((data / "pimmi_copydays_like" / "dataset1").glob("*.jpg"))[:copydays]
    files += sorted((data / "unsplash_coenm").glob("*.jpg")) + sorted((data / "pdq_threatexchange").rglob("*.jpg"))
    return [f.read_bytes() for f in files]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data", help="the shared photos")
    p.add_argument("--copydays", type=int, default=400, help="how many copydays photos (default: %(default)s)")
    p.add_argument("--seeded", type=int, default=0, help="photos made here instead of the shared ones")
    p.add_argument("--crop-pct", type=float, default=0.875)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=Path("bench_out"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    datas = seeded(args.seeded) if args.seeded else shared(args.data, args.copydays)
    taken = [d for d in datas if probe_jpeg(d, MAX_PIXELS) is not None]
    pre = Preprocess(input_size=(3, 224, 224), interpolation="bicubic", mean=(0.5,) * 3, std=(0.5,) * 3,
                     crop_pct=args.crop_pct, crop_mode="center")
    device = torch.device(args.device)
    result = {"device": args.device, "crop_pct": args.crop_pct, "jpegs": len(datas), "device_path": len(taken),
              "cpu_fallback": len(datas) - len(taken),
              "draft": measure(taken, pre, True, device), "no_draft": measure(taken, pre, False, device)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "device_decode.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
