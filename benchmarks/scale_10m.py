"""make dedup and make index at scale, run exactly as the Makefile runs them, beside the plan's predictions.

    .venv/bin/python benchmarks/scale_10m.py --n 10000000 --out /work/scale_data/scale_10m       # the full size
    .venv/bin/python benchmarks/scale_10m.py --n 3000 --shards 4 --clusters 16 --out /tmp/s   # the smoke size

1. Makes (once; reused while its parameters match) the synthetic pool of benchmarks/dedup_scale.py: float16 `cls`
   vectors around `--clusters` centres with `--dup-fraction` of the rows planted as noisy copies.
2. Asks each job for its plan in a fresh process (`--plan`'s own functions: the factory, nprobe, k and budget
   the job chooses, with a calibration on a sample of these vectors) and keeps its predicted figures.
3. Runs `python -m jobs.dedup --features ROOT` (what `make dedup FEATURES=ROOT` runs; `--budget-run GiB`
   adds a second run with `--memory-budget GiB` into OUT/budget) and `python -m jobs.index --features ROOT`
   (`make index`), each in a child process with no setting of ours. Their RSS is sampled every 0.2 s from
   /proc, the peak of each process is its own (wait4's ru_maxrss), and the dedup run is cut into three
   windows by the files it writes: until `dedup/index/index.json` exists, until every graph part is marked
   done, the rest. Per window: wall seconds, peak RSS, disk written, and the prediction's ratio.
4. Checks the groups against the planted copies (benchmarks/dedup_scale.py's checks: planted-pair recall,
   false components by the kind of edge that made them) and, on `--eval-sample` seeded queries, every exact
   edge above the threshold by brute force: found among the query's graph candidates, and in one component.
5. Serving the index `make index` built (or dedup's, with `--skip-index`): warm search latency of the serve
   engine for one query and for a batch of 64 (p50, p99), of `make serve`'s `/api/search` one request at a time,
   and `make search` cold (a fresh process, start-up included) for one query.
Writes OUT/scale_10m.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import dedup_scale  # noqa: E402  (the pool, its planted copies and its checks)

GIB = 2**30
WINDOWS = ("index", "graph", "rest")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10_000_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--out", default="bench_out/scale_10m")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shards", type=int, default=100)
    p.add_argument("--clusters", type=int, default=1024)
    p.add_argument("--spread", type=float, default=1.5)
    p.add_argument("--dup-fraction", type=float, default=0.01)
    p.add_argument("--eval-sample", type=int, default=1000, help="queries checked against brute force")
    p.add_argument("--budget-run", type=float, default=None, metavar="GiB",
                   help="also run make dedup with --memory-budget GiB (into OUT/budget)")
    p.add_argument("--skip-index", action="store_true", help="no make index run (serve dedup's index)")
    p.add_argument("--skip-dedup", action="store_true", help="no make dedup run (its last results are kept)")
    p.add_argument("--serve-requests", type=int, default=200)
    p.add_argument("--record", metavar="JSON", help="append the run's row to this record (e.g. "
                                                    "benchmarks/results/scale_10m.json, for make perf-page)")
    p.add_argument("--_plan", help=argparse.SUPPRESS)  # the child that plans one job
    return p.parse_args(argv)


# ----------------------------------------------------------------------------------------------- plans

def plan_child(job: str, root: str, extra: list[str]) -> None:
    """In a fresh process, as the job's `--plan` runs: print the model's figures as JSON."""
    import argparse as ap

    from jobs._args import config_from

    if job == "dedup":
        from jobs import dedup as module
        from pipeline.dedup.config import DedupConfig as Config
        from pipeline.dedup.plan import plan_dedup as plan
    else:
        from jobs import index as module
        from pipeline.index.config import IndexConfig as Config
        from pipeline.index.planner import plan_index as plan
    parser = ap.ArgumentParser()
    module.add_arguments(parser)
    args = parser.parse_args(["--features", root, *extra])
    if job == "dedup":
        from pipeline.layout import OutputRoot

        done = plan(config_from(Config, args, out=str(OutputRoot(args.root).dedup_dir) if args.root else None))
    else:
        done = plan(config_from(Config, args))
    print(json.dumps({"text": done.text, "factory": done.plan.workload.factory,
                      "base_bytes": done.machine.base_bytes,
                      "stages": {name: {"peak_bytes": st.peak_bytes, "disk_bytes": st.disk_bytes,
                                        "seconds": st.seconds, "bound_by": st.bound_by, "held": st.held}
                                 for name, st in done.plan.stages.items()}}))


def predicted(job: str, root: Path, extra: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--_plan", job, "--", str(root), *extra], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------- runs

def du(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def status(pid: int) -> dict[str, int]:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                out[name] = int(value.split()[0]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def run_job(cmd: list[str], log: Path, window_of=None) -> dict:
    """Run a job in a child process and cut its run into windows by `window_of()` → name. Each window's peak is
    the child's VmHWM, reset (/proc/PID/clear_refs) when the child has exec'd and again at each window's start,
    read every 20 ms until the window ends (the fork of this process would otherwise count, as it does in
    ru_maxrss)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT)
    while b"jobs." not in Path(f"/proc/{proc.pid}/cmdline").read_bytes():  # until the exec
        time.sleep(0.001)
    windows: dict[str, dict] = {}
    load: list[float] = []
    current = None
    while proc.poll() is None:
        name = window_of() if window_of else "all"
        now = time.perf_counter() - t0
        if name != current:
            if current is not None:
                windows[current]["end_s"] = now
            try:
                Path(f"/proc/{proc.pid}/clear_refs").write_text("5")
            except OSError:
                break
            windows.setdefault(name, {"start_s": now, "peak": 0})
            current = name
        windows[name]["peak"] = max(windows[name]["peak"], status(proc.pid).get("VmHWM", 0))
        if len(load) < (now / 5):
            load.append(os.getloadavg()[0])
        time.sleep(0.02)
    wall = time.perf_counter() - t0
    if current is not None:
        windows[current]["end_s"] = wall
    if proc.wait() != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{log.read_text()[-3000:]}")
    for w in windows.values():
        w["wall_s"] = round(w.pop("end_s") - w["start_s"], 2)
        w["start_s"] = round(w["start_s"], 2)
        w["peak_rss_gib"] = round(w.pop("peak") / GIB, 3)
    return {"command": " ".join(cmd[1:]), "wall_s": round(wall, 2),
            "peak_rss_gib": max((w["peak_rss_gib"] for w in windows.values()), default=0.0),
            "load_avg": round(float(np.mean(load)), 2) if load else None, "windows": windows}


def dedup_windows(root: Path, out: Path, n: int):
    parts = -(-n // 65536)
    index_json, done = out / "index" / "index.json", out / "knn" / "_done"

    def window() -> str:
        if not index_json.exists():
            return "index"
        if not done.exists() or sum(1 for _ in done.glob("*.json")) < parts:
            return "graph"
        return "rest"
    return window


def compare(measured: dict, plan: dict, names: dict[str, str]) -> dict:
    """Measured beside predicted, per window: peak RSS, disk and seconds, and the ratios measured/predicted."""
    out = {}
    for window, stage in names.items():
        m, p = measured["windows"].get(window, {}), plan["stages"][stage]
        row = {"peak_rss_gib": m.get("peak_rss_gib"), "predicted_peak_gib": round(p["peak_bytes"] / GIB, 3),
               "wall_s": m.get("wall_s"), "predicted_s": round(p["seconds"], 1) if p["seconds"] else None,
               "disk_gib": m.get("disk_gib"), "predicted_disk_gib": round(p["disk_bytes"] / GIB, 3),
               "bound_by": p["bound_by"]}
        for a, b in (("peak_rss_gib", "predicted_peak_gib"), ("wall_s", "predicted_s"), ("disk_gib",
                                                                                         "predicted_disk_gib")):
            row[a.split("_")[0] + "_ratio"] = round(row[a] / row[b], 3) if row[a] and row[b] else None
        out[window] = row
    return out


# ----------------------------------------------------------------------------------------------- checks

def exact_edges_check(args: argparse.Namespace, root: Path, dedup_dir: Path) -> dict:
    """On seeded queries: every exact neighbour above the threshold (brute force over all vectors, streamed),
    and the exact top-k; the share found among the query's graph candidates, and in the query's component."""
    import pyarrow.parquet as pq

    from pipeline.index.knn import iter_parts
    from pipeline.roots.features import feature_columns, iter_batches, open_features, to_matrix

    fs = open_features(root)
    rng = np.random.default_rng([args.seed, 9])
    sample = np.sort(rng.choice(args.n, min(args.eval_sample, args.n), replace=False))
    q = np.stack(list(dedup_scale._rows(fs, sample))).astype(np.float32)
    threshold = 0.6  # DedupConfig's default: the benchmark uses the job's own
    pairs_q, pairs_j, top_s, top_i, start = [], [], None, None, 0
    k = 64
    for batch in iter_batches(fs, feature_columns("cls"), 65536):
        x = to_matrix(batch, "cls")
        s = q @ x.T
        rows, cols = np.nonzero(s > threshold)
        pairs_q.append(rows)
        pairs_j.append(cols + start)
        ids = np.broadcast_to(np.arange(start, start + len(x)), s.shape)
        both_s = s if top_s is None else np.concatenate([top_s, s], 1)
        both_i = ids if top_i is None else np.concatenate([top_i, ids], 1)
        keep = np.argpartition(-both_s, min(k, both_s.shape[1] - 1), axis=1)[:, :k + 1]
        top_s, top_i = np.take_along_axis(both_s, keep, 1), np.take_along_axis(both_i, keep, 1)
        start += len(x)
    pq_, pj = np.concatenate(pairs_q), np.concatenate(pairs_j)
    real = sample[pq_] != pj
    pq_, pj = pq_[real], pj[real]
    graph: dict[int, set] = {}
    wanted = set(sample.tolist())
    for ids, nb, _ in iter_parts(dedup_dir / "knn"):
        for r in np.flatnonzero(np.isin(ids, sample)):
            graph[int(ids[r])] = set(nb[r].tolist())
    assert set(graph) == wanted
    comp = pq.read_table(dedup_dir / "groups.parquet", columns=["component"]).column("component").to_numpy()
    in_graph = np.array([j in graph[int(sample[i])] for i, j in zip(pq_, pj)], bool)
    same = comp[sample[pq_]] == comp[pj]
    recall_k = []
    for i, row in enumerate(sample):
        order = np.argsort(-top_s[i])
        true = [j for j in top_i[i][order].tolist() if j != row][:k]
        recall_k.append(len(graph[int(row)] & set(true)) / len(true))
    return {"queries": int(len(sample)), "threshold": threshold, "exact_edges_above_threshold": int(len(pj)),
            "edge_recall_graph": round(float(in_graph.mean()), 5) if len(pj) else None,
            "edge_recall_component": round(float(same.mean()), 5) if len(pj) else None,
            "graph_recall_at_k": round(float(np.mean(recall_k)), 5), "k": k}


# ----------------------------------------------------------------------------------------------- serving

def read_through(path: Path, chunk: int = 64 << 20) -> float:
    """Read a file once (into the page cache); the seconds it took."""
    t = time.perf_counter()
    with path.open("rb", buffering=0) as f:
        while f.read(chunk):
            pass
    return time.perf_counter() - t


def percentiles(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "n": len(ms)}


def serve_latency(args: argparse.Namespace, root: Path, index_dir: Path, out: Path) -> dict:
    """Warm latency of the serve engine (one query, a batch of 64) and of /api/search; `make search` cold."""
    import httpx
    import pyarrow.parquet as pq
    import serve_load

    from pipeline.index.build import search
    from pipeline.roots.features import open_features
    from pipeline.serve.engine import ServedIndex

    fs = open_features(root)
    rng = np.random.default_rng([args.seed, 11])
    rows = np.sort(rng.choice(args.n, min(args.n, 64 + args.serve_requests), replace=False))
    queries = np.stack(list(dedup_scale._rows(fs, rows))).astype(np.float32)
    result: dict = {"index": str(index_dir)}
    t = time.perf_counter()
    result["page_cache_s"] = round(read_through(index_dir / "index.faiss"), 2)  # warm: make serve's index is
    # memory-mapped, and the runs before this one (the feature files read once per re-scoring block) evict it
    t = time.perf_counter()
    served = ServedIndex(index_dir)
    result["engine_load_s"] = round(time.perf_counter() - t, 2)
    result["factory"], result["nprobe"] = served.record["factory"], served.record.get("nprobe")
    for q in queries[:10]:  # warm: the pages of the index the queries touch
        served.search(q, 10)
    one = []
    for q in queries[64:64 + args.serve_requests]:
        t = time.perf_counter()
        served.search(q, 10)
        one.append(time.perf_counter() - t)
    result["engine_one_query"] = percentiles(one)
    batch = []
    for _ in range(max(5, args.serve_requests // 10)):
        t = time.perf_counter()
        search(served.index, queries[:64], 10)
        batch.append(time.perf_counter() - t)
    result["engine_batch_64"] = percentiles(batch)
    del served
    # make serve: one request at a time over HTTP (warm), keys of indexed images
    port = serve_load.free_port()
    keys = [f"img{int(r):08d}" for r in rows[64:64 + args.serve_requests]]
    proc, start = serve_load.start_server(str(index_dir.parent), port, out / "server.log")
    try:
        result["serve_start_s"] = round(start, 2)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            for key in keys[:10]:
                client.get("/api/search", params={"key": key, "k": 10}).raise_for_status()
            http = []
            for key in keys:
                t = time.perf_counter()
                client.get("/api/search", params={"key": key, "k": 10}).raise_for_status()
                http.append(time.perf_counter() - t)
        result["serve_http_one_query"] = percentiles(http)
        result["serve_memory"] = serve_load.memory(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    # make search, cold: a fresh process, start-up included, one query (an extract output of one row)
    qroot = out / "one_query"
    if qroot.exists():
        shutil.rmtree(qroot)
    (qroot / "features").mkdir(parents=True)
    first = sorted((root / "features").glob("*.parquet"))[0]
    pq.write_table(pq.read_table(first).slice(0, 1), qroot / "features" / "part-0000.parquet")
    cold = []
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "jobs.search", "--index", str(index_dir), "--query", str(qroot),
                        "--k", "10", "--log-level", "WARNING"], cwd=ROOT, check=True, capture_output=True)
        cold.append(time.perf_counter() - t)
    result["search_cold_s"] = [round(x, 2) for x in cold]
    return result


# ----------------------------------------------------------------------------------------------- main

def machine() -> dict:
    flags = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                flags = " ".join(x for x in line.split(":", 1)[1].split() if x.startswith(("avx", "amx", "fma")))
                break
    return {"cores": os.cpu_count(), "flags": flags, "loadavg_start": [round(x, 2) for x in os.getloadavg()],
            "mem_total_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB, 1)}


def dedup_run(args: argparse.Namespace, root: Path, extra: list[str], out: Path, name: str) -> dict:
    dedup_dir = out if extra else root / "dedup"
    if dedup_dir.exists():
        shutil.rmtree(dedup_dir)
    for stale in (root / "duplicates.csv",):
        stale.unlink(missing_ok=True)
    plan = predicted("dedup", root, extra)
    cmd = [sys.executable, "-m", "jobs.dedup", "--features", str(root), "--no-progress", *extra]
    measured = run_job(cmd, root / f"{name}.log", dedup_windows(root, dedup_dir, args.n))
    disks = {"index": du(dedup_dir / "index"), "graph": du(dedup_dir / "knn"),
             "rest": du(dedup_dir / "groups.parquet") + du(dedup_dir / "summary.json")}
    for window, size in disks.items():
        measured["windows"].setdefault(window, {})["disk_gib"] = round(size / GIB, 3)
    whole = {"peak_rss_gib": measured["peak_rss_gib"], "wall_s": measured["wall_s"],
             "disk_gib": round(sum(disks.values()) / GIB, 3)}
    rows = compare(measured, plan, {w: f"dedup:{w}" for w in WINDOWS})
    rows["whole"] = compare({"windows": {"whole": whole}}, plan, {"whole": "dedup"})["whole"]
    return {"command": "make dedup FEATURES=" + str(root) + (f" ARGS='{' '.join(extra)}'" if extra else ""),
            "run": measured, "plan": plan["text"], "factory": plan["factory"], "compared": rows,
            "dedup_dir": str(dedup_dir)}


def carry_over(json_path: Path, params: dict, args: argparse.Namespace) -> dict:
    """The last run's results of the stages this run skips (the same pool only), so that one record holds them all:
    `--skip-dedup` keeps its dedup and quality figures, `--skip-index` its make index figures and that index,
    served again. Each stage's figures say when they were measured ("started")."""
    if not json_path.exists():
        return {}
    last = json.loads(json_path.read_text())
    if last.get("params") != params:
        return {}
    names = (["dedup", "quality"] if args.skip_dedup else []) + (["budget"] if not args.budget_run else []) + \
        (["index"] if args.skip_index and (json_path.parent / "index" / "index.json").exists() else [])
    kept = {name: last[name] for name in names if name in last}
    for name in kept:
        kept[name].setdefault("measured", {"started": last.get("started"), "command": last.get("command")})
    return kept


def main(argv: list[str] | None = None) -> None:
    if argv is None and "--_plan" in sys.argv:
        at = sys.argv.index("--")
        plan_child(sys.argv[sys.argv.index("--_plan") + 1], sys.argv[at + 1], sys.argv[at + 2:])
        return
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ns = argparse.Namespace(**vars(args), k=64, threshold=0.6, phash_distance=8, regen=False)
    params = dedup_scale.gen_params(ns)
    json_path = out / "scale_10m.json"
    result: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "params": params, "machine": machine(),
                    "command": " ".join([Path(sys.executable).name, *sys.argv])}
    result["generate"] = dedup_scale.ensure_features(out, params, False)
    carried = carry_over(json_path, params, args)
    result.update(carried)

    def save() -> None:
        json_path.write_text(json.dumps(result, indent=2, sort_keys=True, default=str) + "\n")

    save()
    if not args.skip_dedup:
        result["dedup"] = dedup_run(args, out, [], out, "dedup")
        save()
        t = time.perf_counter()
        quality = dedup_scale.evaluate(argparse.Namespace(**{**vars(ns), "eval_sample": 0}), out, out / "dedup")
        quality.update(exact_edges_check(args, out, out / "dedup"))
        quality["eval_seconds"] = round(time.perf_counter() - t, 1)
        result["quality"] = quality
        save()
    if args.budget_run:
        extra = ["--memory-budget", f"{args.budget_run:g}", "--out", str(out / "budget")]
        result["budget"] = dedup_run(args, out, extra, out / "budget" / "dedup", "budget")
        save()
    index_dir = out / "index" if "index" in carried else out / "dedup" / "index"
    if not args.skip_index:
        if (out / "index").exists():
            shutil.rmtree(out / "index")
        plan = predicted("index", out, [])
        measured = run_job([sys.executable, "-m", "jobs.index", "--features", str(out), "--no-progress"],
                           out / "index.log")
        measured["windows"]["all"]["disk_gib"] = round(du(out / "index") / GIB, 3)
        measured["windows"]["all"]["peak_rss_gib"] = measured["peak_rss_gib"]
        result["index"] = {"command": f"make index FEATURES={out}", "run": measured, "plan": plan["text"],
                           "factory": plan["factory"], "compared": compare(measured, plan, {"all": "index"})}
        index_dir = out / "index"
        save()
    result["serve"] = serve_latency(args, out, index_dir, out)
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    save()
    if args.record:
        from pipeline.bench.perfpage import append_row

        append_row(args.record, record_row(result), title=TITLE)
    print(report(result))
    print(f"\nwrote {json_path}")


TITLE = "make dedup and make index at scale, beside --plan (benchmarks/scale_10m.py)"


PREDICTED = {"wall_s": "predicted_s", "peak_rss_gib": "predicted_peak_gib", "disk_gib": "predicted_disk_gib"}


def _vs(c: dict, key: str, unit: str) -> str:
    m, p = c[key], c[PREDICTED[key]]
    return f"{m:,.2f} {unit} (plan {p:,.2f}, ×{m / p:.2f})" if m and p else "—"


def record_row(r: dict) -> dict:
    """The run as one row of benchmarks/results/scale_10m.json."""
    import platform

    import torch

    figures = {"N × dim": f"{r['params']['n']:,} × {r['params']['dim']} (float16, {r['params']['shards']} shards)"}
    for job in ("dedup", "budget", "index"):
        if job not in r:
            continue
        j, whole = r[job], r[job]["compared"].get("whole") or r[job]["compared"]["all"]
        figures[f"{job} command"] = f"{j['command']} → {j['factory']}"
        figures[f"{job} wall"] = _vs(whole, "wall_s", "s")
        figures[f"{job} peak RSS"] = _vs(whole, "peak_rss_gib", "GiB")
        figures[f"{job} disk"] = _vs(whole, "disk_gib", "GiB")
        if j.get("measured"):  # carried from an earlier run of the same pool (--skip-dedup / --skip-index)
            m = j["measured"] if isinstance(j["measured"], dict) else {"started": j["measured"]}
            figures[f"{job} measured by"] = " ".join(x for x in (m.get("command"), f"at {m.get('started')}") if x)
        if job != "index":
            figures[f"{job} windows (index, graph, rest)"] = "; ".join(
                f"{w} {c['wall_s']:.0f} s, {c['peak_rss_gib']:.2f} GiB (plan {c['predicted_peak_gib']:.2f})"
                for w, c in j["compared"].items() if w != "whole")
    if "quality" in r:
        q = r["quality"]
        figures["planted-pair recall"] = str(q["planted_pair_recall"])
        figures["exact edges above the threshold"] = (
            f"{q['exact_edges_above_threshold']} on {q['queries']} queries: recall {q['edge_recall_graph']} in the "
            f"graph, {q['edge_recall_component']} in one component; recall@{q['k']} {q['graph_recall_at_k']}")
        kinds = f" {q['false_components_by_kind']}" if q["false_components_by_kind"] else ""
        figures["false components"] = (f"{q['false_components']}{kinds} (chance pHash pairs of the random synthetic "
                                       f"hashes among the compared pairs: {q['expected_chance_phash_pairs']})")
    s = r["serve"]
    figures["serve index"] = f"{s['factory']}, nprobe {s['nprobe']}"
    for name, key in (("engine, one query", "engine_one_query"), ("engine, batch of 64", "engine_batch_64")):
        figures[name] = f"p50 {s[key]['p50_ms']} ms, p99 {s[key]['p99_ms']} ms (warm)"
    figures["make serve /api/search"] = (f"p50 {s['serve_http_one_query']['p50_ms']} ms, p99 "
                                         f"{s['serve_http_one_query']['p99_ms']} ms (one at a time, warm)")
    figures["make search, cold"] = " / ".join(f"{x:.1f} s" for x in s["search_cold_s"])
    loads = [r[j]["run"]["load_avg"] for j in ("dedup", "budget", "index") if j in r]
    return {"date": r["started"][:10], "cpu": platform.processor() or _cpu_name(), "flags": r["machine"]["flags"],
            "cores": r["machine"]["cores"], "load": "load average during the runs " + ", ".join(map(str, loads)),
            "torch": torch.__version__, "command": r["command"], "figures": figures}


def _cpu_name() -> str | None:
    with open("/proc/cpuinfo") as f:
        return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)


def report(r: dict) -> str:
    lines = [f"scale_10m: n={r['params']['n']:,} dim={r['params']['dim']}, {r['machine']['cores']} cores"]
    for job in ("dedup", "budget", "index"):
        if job not in r:
            continue
        lines.append(f"{r[job]['command']} ({r[job]['factory']}): {r[job]['run']['wall_s']:.0f} s, peak "
                     f"{r[job]['run']['peak_rss_gib']:.2f} GiB, load {r[job]['run']['load_avg']}")
        lines.append(f"  {'window':<8}{'wall s':>9}{'pred s':>9}{'peak GiB':>10}{'pred':>8}{'ratio':>7}"
                     f"{'disk GiB':>10}{'pred':>8}{'ratio':>7}")
        for w, c in r[job]["compared"].items():
            lines.append(f"  {w:<8}{c['wall_s'] or 0:>9.1f}{c['predicted_s'] or 0:>9.1f}{c['peak_rss_gib'] or 0:>10.2f}"
                         f"{c['predicted_peak_gib']:>8.2f}{c['peak_ratio'] or 0:>7.2f}{c['disk_gib'] or 0:>10.3f}"
                         f"{c['predicted_disk_gib']:>8.3f}{c['disk_ratio'] or 0:>7.2f}")
    if "quality" in r:
        q = r["quality"]
        lines.append(f"quality: planted-pair recall {q['planted_pair_recall']}, exact edges above "
                     f"{q['threshold']}: {q['exact_edges_above_threshold']} on {q['queries']} queries, recall "
                     f"graph {q['edge_recall_graph']} component {q['edge_recall_component']}; graph recall@"
                     f"{q['k']} {q['graph_recall_at_k']}; false components {q['false_components']} "
                     f"{q['false_components_by_kind']} (chance pHash pairs expected "
                     f"{q['expected_chance_phash_pairs']})")
    s = r["serve"]
    lines.append(f"serve ({s['factory']}, nprobe {s['nprobe']}): engine one query {s['engine_one_query']}, batch 64 "
                 f"{s['engine_batch_64']}; /api/search {s['serve_http_one_query']}; make search cold "
                 f"{s['search_cold_s']} s")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
