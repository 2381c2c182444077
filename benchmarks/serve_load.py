"""Load test of `make serve`: queries/s and p50/p99 latency for key and image queries, server memory, errors.

    .venv/bin/python benchmarks/serve_load.py --n 1000000 --out bench_out/serve_load     # the full size
    .venv/bin/python benchmarks/serve_load.py --n 2000 --shards 4 --factory IVF16,PQ16x4fs --clients 2 \\
        --seconds 2 --model-kwargs depth=2 --resolution 56 --out /tmp/serve_smoke            # the smoke size

1. Setup, cached in OUT while its parameters match: a feature root of N seeded clustered 384-d unit vectors
   (float16 `cls`, ~100 Parquet shards, keys img0000000...) stamped with the provenance of the query model
   (default: DINOv2 ViT-S/14 with random weights, by name: image queries then run a real forward pass of the
   right width, their neighbours mean nothing), and an IVF-PQ index over it (`--factory`, built by
   pipeline.index.build). Build times are reported.
2. Starts `python -m jobs.serve` on a free loopback port in a subprocess (first start copies the stored vectors
   for key queries: timed), waits for /health.
3. Two bounded phases of `--seconds` each, `--clients` concurrent clients (asyncio + httpx, one connection
   each): GET /api/search?key=<random indexed key>, then POST /api/search with one of 8 seeded 640×480 JPEGs
   (after one warm-up query that loads the model, timed). Every request's latency and status is kept.
4. Reports per phase: requests, errors (any non-200 or transport error; must be 0), queries/s, p50/p90/p99/max
   latency; server RSS after start and after each phase and its peak (VmHWM); the client's own CPU share
   (client and server share the machine). Prints a table, writes OUT/serve_load.json, stops the server.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MODEL = "vit_small_patch14_reg4_dinov2.lvd142m"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--shards", type=int, default=100)
    p.add_argument("--clusters", type=int, default=1000)
    p.add_argument("--factory", default="IVF4096,PQ64x4fs", help="the IVF-PQ index (default: %(default)s)")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--model", default=MODEL)
    p.add_argument("--model-kwargs", default="", help="e.g. depth=2 (smoke runs)")
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench_out/serve_load")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--print-provenance", action="store_true", help=argparse.SUPPRESS)  # the child of setup()
    return p.parse_args(argv)


# ----------------------------------------------------------------------------------------------- setup
def model_provenance(args: argparse.Namespace) -> dict:
    """The provenance the query model gives its features (random weights by name, as extract records it), made in
    a child process: torch's OpenMP threads, once started here, slow Faiss's k-means in this process 5-fold."""
    argv = [sys.executable, __file__, "--print-provenance", "--model", args.model, "--model-kwargs",
            args.model_kwargs, "--resolution", str(args.resolution)]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600, check=True)
    return json.loads(proc.stdout)


def print_provenance(args: argparse.Namespace) -> None:
    from pipeline.extract.backbone import create_backbone
    from pipeline.extract.config import ExtractConfig, parse_model_kwargs
    from pipeline.extract.device import resolve_device

    cfg = ExtractConfig(out="(bench)", images="(bench)", model=args.model, weights="random",
                        model_kwargs=parse_model_kwargs(args.model_kwargs), resolution=args.resolution, device="cpu")
    print(json.dumps(create_backbone(cfg, resolve_device("cpu")).provenance()))


def write_features(root: Path, args: argparse.Namespace, prov: dict) -> float:
    """root/features/part-NNNN.parquet: seeded unit vectors around random centres, written shard by shard."""
    from pipeline.io.files import write_parquet_atomic
    from pipeline.io.schema import feature_schema, feature_table

    t0 = time.perf_counter()
    d, n = int(prov["embed_dim"]), args.n
    centres = np.random.default_rng([args.seed, 1]).standard_normal((args.clusters, d), dtype=np.float32)
    schema = feature_schema(prov, {"cls": d, "patch_mean": d}, "float16")
    per_shard = -(-n // args.shards)
    for s, start in enumerate(range(0, n, per_shard)):
        m = min(per_shard, n - start)
        rng = np.random.default_rng([args.seed, 2, s])
        x = centres[rng.integers(0, len(centres), m)] + 0.7 * rng.standard_normal((m, d), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        ids = np.arange(start, start + m)
        rows = {"key": [f"img{i:07d}" for i in ids], "shard": [f"part-{s:04d}"] * m, "index": list(range(m)),
                "width": [640] * m, "height": [480] * m,
                "sha1": [int(i).to_bytes(20, "big") for i in ids], "phash": [int(i) for i in ids],
                "phash_mirror": [0] * m, "phash_flip": [0] * m, "phash_rot180": [0] * m}
        write_parquet_atomic(feature_table(schema, rows, {"cls": x, "patch_mean": x}),
                             root / "features" / f"part-{s:04d}.parquet")
    return time.perf_counter() - t0


def setup(args: argparse.Namespace, out: Path) -> dict:
    """The feature root and index, reused while the parameters that made them match."""
    from pipeline.index.build import IndexConfig, build_index
    from pipeline.layout import read_index_record

    params = {"n": args.n, "shards": args.shards, "clusters": args.clusters, "seed": args.seed, "model": args.model,
              "model_kwargs": args.model_kwargs, "resolution": args.resolution, "version": 1}
    root, stamp = out / "root", out / "root" / "bench_params.json"
    info: dict = {"params": params, "reused_features": False, "reused_index": False}
    if stamp.exists() and json.loads(stamp.read_text()) == params:
        info["reused_features"] = True
    else:
        prov = model_provenance(args)
        for old in (root / "features").glob("*.parquet") if (root / "features").exists() else []:
            old.unlink()
        info["features_seconds"] = round(write_features(root, args, prov), 1)
        (root / "index").mkdir(parents=True, exist_ok=True)
        for old in (root / "index").iterdir():
            old.unlink()
        stamp.write_text(json.dumps(params))
    record = read_index_record(root / "index")
    if record and record.get("factory") == args.factory and record.get("count") == args.n:
        info["reused_index"] = True
    else:
        record = build_index(IndexConfig(features=str(root), factory=args.factory, progress=args.progress))
    info["index"] = {k: record.get(k) for k in ("factory", "count", "dim", "nprobe", "train_seconds",
                                                "build_seconds")}
    info["root"] = str(root)
    return info


# ----------------------------------------------------------------------------------------------- server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory(pid: int) -> dict:
    """The server's resident memory now and at its peak, MiB (from /proc)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = round(int(value.split()[0]) / 1024, 1)
    return {"rss_mib": fields.get("VmRSS"), "peak_rss_mib": fields.get("VmHWM")}


def start_server(root: str, port: int, log: Path) -> tuple[subprocess.Popen, float]:
    import httpx

    cmd = [sys.executable, "-m", "jobs.serve", "--index", f"{root}/index", "--port", str(port), "--device", "cpu",
           "--no-progress", "--log-level", "WARNING", "--max-k", "1000"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                return proc, time.perf_counter() - t0
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not answer /health in time")


# ----------------------------------------------------------------------------------------------- load
def query_images(seed: int) -> list[bytes]:
    from PIL import Image

    out = []
    for i in range(8):
        rng = np.random.default_rng([seed, 9, i])
        arr = np.clip(rng.integers(0, 256, 3) + rng.normal(0, 40, (480, 640, 3)), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


async def phase(url: str, clients: int, seconds: float, request) -> dict:
    """`clients` concurrent loops of `request(client, rng)` for `seconds`; latencies and failures."""
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    stop = time.monotonic() + seconds

    async def loop(c: int) -> None:
        rng = random.Random(c)
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            while time.monotonic() < stop:
                t = time.perf_counter()
                try:
                    answer = await request(client, rng)
                    ok = answer.status_code == 200
                    if not ok:
                        errors.append(f"{answer.status_code}: {answer.text[:200]}")
                except httpx.HTTPError as exc:
                    ok = False
                    errors.append(f"{type(exc).__name__}: {exc}")
                if ok:
                    latencies.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    cpu0 = time.process_time()
    await asyncio.gather(*(loop(c) for c in range(clients)))
    wall = time.perf_counter() - t0
    ms = np.asarray(latencies) * 1000 if latencies else np.zeros(1)
    return {"requests": len(latencies) + len(errors), "errors": len(errors), "first_errors": errors[:5],
            "seconds": round(wall, 2), "qps": round(len(latencies) / wall, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 1), "p90_ms": round(float(np.percentile(ms, 90)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1), "max_ms": round(float(ms.max()), 1),
            "client_cpu_share": round((time.process_time() - cpu0) / wall / (os.cpu_count() or 1), 2)}


def run(args: argparse.Namespace) -> dict:
    import httpx

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "args": vars(args), "cpus": os.cpu_count(),
                    "note": f"image queries embed with {args.model} ({args.model_kwargs or 'full depth'}) and "
                            f"RANDOM weights, by name: real forward cost, meaningless neighbours"}
    result["setup"] = setup(args, out)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc, start_seconds = start_server(result["setup"]["root"], port, out / "server.log")
    try:
        result["server"] = {"start_seconds": round(start_seconds, 2), "after_start": memory(proc.pid),
                            "health": httpx.get(f"{url}/health").json()}
        n, k = args.n, args.k

        async def by_key(client, rng):
            return await client.get("/api/search", params={"key": f"img{rng.randrange(n):07d}", "k": k})

        result["key_queries"] = asyncio.run(phase(url, args.clients, args.seconds, by_key))
        result["server"]["after_key_queries"] = memory(proc.pid)
        images = query_images(args.seed)
        t0 = time.perf_counter()
        warm = httpx.post(f"{url}/api/search", params={"k": k}, content=images[0],
                          headers={"content-type": "image/jpeg"}, timeout=600)
        result["server"]["first_image_query_seconds"] = round(time.perf_counter() - t0, 2)  # loads the model
        if warm.status_code != 200:
            raise RuntimeError(f"the first image query failed: {warm.status_code} {warm.text[:500]}")

        async def by_image(client, rng):
            return await client.post("/api/search", params={"k": k}, content=rng.choice(images),
                                     headers={"content-type": "image/jpeg"})

        result["image_queries"] = asyncio.run(phase(url, args.clients, args.seconds, by_image))
        result["server"]["after_image_queries"] = memory(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    result["errors"] = result.get("key_queries", {}).get("errors", 0) + result.get("image_queries", {}).get(
        "errors", 0)
    (out / "serve_load.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return result


def report(result: dict) -> str:
    s, srv = result["setup"], result["server"]
    lines = [f"serve_load: n={s['index']['count']} {s['index']['factory']} (nprobe {s['index']['nprobe']}), "
             f"{result['args']['clients']} clients × {result['args']['seconds']} s per phase, {result['cpus']} CPUs",
             f"setup: features {'reused' if s['reused_features'] else str(s.get('features_seconds')) + ' s'}, "
             f"index {'reused' if s['reused_index'] else str(s['index']['build_seconds']) + ' s'}; server start "
             f"{srv['start_seconds']} s (loading {srv['health']['index']['loading']}), first image query "
             f"{srv['first_image_query_seconds']} s",
             f"{'phase':<14}{'requests':>9}{'errors':>7}{'q/s':>8}{'p50 ms':>8}{'p90 ms':>8}{'p99 ms':>8}"
             f"{'max ms':>8}{'client cpu':>11}"]
    for name in ("key_queries", "image_queries"):
        r = result[name]
        lines.append(f"{name:<14}{r['requests']:>9}{r['errors']:>7}{r['qps']:>8}{r['p50_ms']:>8}{r['p90_ms']:>8}"
                     f"{r['p99_ms']:>8}{r['max_ms']:>8}{r['client_cpu_share']:>11.0%}")
    lines.append(f"server RSS MiB: after start {srv['after_start']['rss_mib']}, after key queries "
                 f"{srv['after_key_queries']['rss_mib']}, after image queries {srv['after_image_queries']['rss_mib']}, "
                 f"peak {srv['after_image_queries']['peak_rss_mib']}")
    lines.append(f"errors: {result['errors']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import logging

    logging.basicConfig(level=logging.ERROR if "--print-provenance" in (argv or sys.argv) else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    if args.print_provenance:
        print_provenance(args)
        return 0
    result = run(args)
    print(report(result))
    print(f"wrote {Path(result['args']['out']) / 'serve_load.json'}")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
