"""Dedup at scale: index build, k-NN graph and run_dedup on N × D seeded clustered vectors.

    .venv/bin/python benchmarks/dedup_scale.py --n 1000000 --dim 384 --out bench_out/dedup_scale

1. Makes (once; reused while its parameters match, `--regen` to redo) a feature root OUT/features of float16
   `cls` vectors in ~100 Parquet shards, written chunk by chunk in a child process (so its memory does not
   count): unit vectors around `--clusters` random centres (in-cluster cosine ≈ 1/(1+spread²) ≈ 0.31, nearest
   unrelated neighbour well under the 0.6 threshold), with `--dup-fraction` of the rows planted as noisy copies
   of an earlier row (cosine uniform in 0.85–0.95; 1–3 copies per source). sha1s are unique and pHashes
   random, so the exact stage finds nothing and the pHash stage only chance collisions. Every metadata column
   of pipeline.io.schema is written; the orientation hashes (mirror, flip, 180°) are the pHash with the bits of
   the DCT coefficients those turns negate inverted, as for an image whose coefficients sit far from the median.
2. Times, in this process, as the pipeline runs them:
     index  build_index(IndexConfig(...)) → OUT/dedup/index (auto factory at the 4 GiB budget)
     graph  load_index + build_graph(k=64) → OUT/dedup/knn
     dedup  run_dedup(DedupConfig(...)), which finds that index (same fingerprint) and that graph (all parts
            done) and reuses them: it times reading the features and metadata, the exact and pHash stages,
            loading the index again, reading + exactly re-scoring the graph's edges, components, keepers,
            nearest/reason and writing groups.parquet (the sub-steps are timed by wrapping pipeline.dedup.run's
            functions in this process; no pipeline file is changed).
   Per stage: wall seconds, CPU seconds of this process (cpu/wall ≈ threads used), the CPU other processes
   used meanwhile (/proc/stat; the machine is shared), peak RSS of the stage (VmHWM, reset before each stage
   through /proc/self/clear_refs) and of the process so far (ru_maxrss).
3. Checks the result against the planted groups: recall of planted pairs (same component), planted groups
   recovered exactly, false components (size > 1, not inside one planted group) by the kind of edge that made
   them, graph candidate recall of planted pairs, and recall@k of the graph against brute force on a sample.
4. Prints a table and writes OUT/dedup_scale.json.
"""

from __future__ import annotations

import argparse
import functools
import gc
import hashlib
import json
import logging
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GIB = 2**30
GOAL_SECONDS = 15 * 60
GOAL_BYTES = 8 * GIB


# ----------------------------------------------------------------------------------------------- data

def gen_params(args: argparse.Namespace) -> dict:
    return {"n": args.n, "dim": args.dim, "seed": args.seed, "shards": args.shards, "clusters": args.clusters,
            "spread": args.spread, "dup_fraction": args.dup_fraction, "dup_cos": [0.85, 0.95], "version": 2}


def layout(n: int, seed: int, dup_fraction: float) -> dict:
    """Planted groups: a source row and 1–3 noisy copies at later rows. Cheap: recomputed for evaluation."""
    rng = np.random.default_rng([seed, 1])
    n_copies = int(round(dup_fraction * n))
    sizes = []
    while sum(sizes) < n_copies:
        sizes.append(int(rng.choice([1, 2, 3], p=[0.6, 0.25, 0.15])))
    if sizes:
        sizes[-1] -= sum(sizes) - n_copies
        if sizes[-1] == 0:
            sizes.pop()
    sizes = np.asarray(sizes, np.int64)
    members = rng.choice(n, int(sizes.sum() + len(sizes)), replace=False)
    group = np.full(n, -1, np.int32)  # planted group of each row, -1 if none
    source = np.full(n, -1, np.int64)  # for copies: the row they copy
    pairs = []
    start = 0
    for g, size in enumerate(sizes):
        rows = np.sort(members[start:start + size + 1])
        start += size + 1
        group[rows] = g
        source[rows[1:]] = rows[0]
        pairs.append(np.stack([np.full(size, rows[0]), rows[1:]], 1))
    pairs = np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)
    cos = rng.uniform(0.85, 0.95, n)  # target cosine of each copy to its source
    return {"group": group, "source": source, "pairs": pairs, "groups": len(sizes), "cos": cos}


def provenance(params: dict) -> dict:
    """A provenance record for the synthetic vectors, stamped by the pipeline's own fingerprint."""
    from pipeline.provenance import stamp

    return stamp({"model": "synthetic-dedup-scale", "input_size": [3, 224, 224], "resize_mode": "fixed",
                  "weights": {"source": "file", "path": None,
                              "sha256": hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()},
                  "synthetic": params})


def _sign_mask(negated) -> np.uint64:
    """The bits (row-major 8×8 DCT block, bit 63 = DC) of the coefficients a turn or flip negates."""
    return np.uint64(sum(1 << (63 - (8 * r + c)) for r in range(8) for c in range(8) if negated(r, c)))


# Mirroring negates odd DCT columns, flipping odd rows, a 180° turn the coefficients with r + c odd.
ORIENTATION_MASKS = {"phash_mirror": _sign_mask(lambda r, c: c % 2), "phash_flip": _sign_mask(lambda r, c: r % 2),
                     "phash_rot180": _sign_mask(lambda r, c: (r + c) % 2)}


def generate(root: Path, params: dict) -> None:
    """Write root/features/part-NNNN.parquet chunk by chunk; holds one chunk and the planted sources."""
    from pipeline.io.files import write_parquet_atomic
    from pipeline.io.schema import META_FIELDS, feature_schema, feature_table

    n, d, seed = params["n"], params["dim"], params["seed"]
    plan = layout(n, seed, params["dup_fraction"])
    group, source, cos = plan["group"], plan["source"], plan["cos"]
    centres = np.random.default_rng([seed, 2]).standard_normal((params["clusters"], d), dtype=np.float32)
    sources: dict[int, np.ndarray] = {}
    prov = provenance(params)
    schema = feature_schema(prov, {"cls": d}, "float16")
    if (root / "features").exists():
        shutil.rmtree(root / "features")
    per_shard = -(-n // params["shards"])
    t0 = time.perf_counter()
    for s, start in enumerate(range(0, n, per_shard)):
        stop = min(start + per_shard, n)
        m = stop - start
        rng = np.random.default_rng([seed, 3, s])
        x = centres[rng.integers(0, len(centres), m)]
        x += params["spread"] * rng.standard_normal((m, d), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        rows = np.arange(start, stop)
        for r in rows[(group[rows] >= 0) & (source[rows] < 0)]:  # sources, stored as written (float16)
            sources[int(r)] = x[r - start].astype(np.float16).astype(np.float32)
        for r in rows[source[rows] >= 0]:  # copies, always after their source
            c = cos[r]
            noise = rng.standard_normal(d).astype(np.float32)
            noise *= np.sqrt(1 / c**2 - 1) / np.linalg.norm(noise)
            y = sources[int(source[r])] + noise
            x[r - start] = y / np.linalg.norm(y)
        keys = [f"img{i:08d}" for i in rows]
        phash = rng.integers(0, 2**64 - 1, m, dtype=np.uint64, endpoint=True)
        meta = {"key": keys, "shard": [f"part-{s:04d}"] * m, "index": np.arange(m, dtype=np.int32),
                "width": rng.integers(200, 1200, m).astype(np.int32), "height": np.full(m, 600, np.int32),
                "sha1": [hashlib.sha1(k.encode()).digest() for k in keys], "phash": phash,
                **{name: phash ^ mask for name, mask in ORIENTATION_MASKS.items()}}
        missing = set(META_FIELDS) - set(meta)
        assert not missing, f"the generator does not fill the metadata columns {sorted(missing)}"
        table = feature_table(schema, meta, {"cls": x.astype(np.float16)})
        write_parquet_atomic(table, root / "features" / f"part-{s:04d}.parquet")
        if s % 10 == 0 or stop == n:
            print(f"generate: {stop}/{n} rows, {time.perf_counter() - t0:.1f} s", flush=True)
    (root / "generated.json").write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")


def ensure_features(out: Path, params: dict, regen: bool) -> dict:
    """Generate in a child process unless a root of the same parameters exists."""
    marker = out / "generated.json"
    if not regen and marker.exists() and json.loads(marker.read_text()) == params:
        return {"reused": True}
    if marker.exists():
        marker.unlink()
    t = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, __file__, "--_generate", json.dumps(params), "--out", str(out)], check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"reused": False, "wall_s": round(time.perf_counter() - t, 2),
            "cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 2),
            "peak_rss_gib_child": round(after.ru_maxrss * 1024 / GIB, 3)}


# ----------------------------------------------------------------------------------------------- measuring

def status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def cpu_busy_total() -> float:
    """Busy CPU-seconds of the whole machine (all processes), from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Stage:
    def __init__(self, name: str, results: dict) -> None:
        self.name, self.results = name, results

    def __enter__(self):
        gc.collect()
        self.hwm_reset = reset_hwm()
        self.rss0 = status_kib("VmRSS")
        self.cpu0, self.busy0, self.t0 = own_cpu(), cpu_busy_total(), time.perf_counter()
        print(f"\n=== stage {self.name} (RSS {self.rss0 / 2**20:.2f} GiB, load {os.getloadavg()[0]:.2f})",
              flush=True)
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.t0
        cpu = own_cpu() - self.cpu0
        others = max(0.0, cpu_busy_total() - self.busy0 - cpu)
        rec = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "cpu_per_wall": round(cpu / max(wall, 1e-9), 2),
               "others_cpu_s": round(others, 2), "others_cores_avg": round(others / max(wall, 1e-9), 2),
               "peak_rss_gib": round(status_kib("VmHWM") / 2**20, 3) if self.hwm_reset else None,
               "rss_start_gib": round(self.rss0 / 2**20, 3), "rss_end_gib": round(status_kib("VmRSS") / 2**20, 3),
               "process_max_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
               "loadavg_end": [round(x, 2) for x in os.getloadavg()], "ok": exc[0] is None}
        self.results[self.name] = rec
        print(f"=== stage {self.name}: {wall:.1f} s wall, {cpu:.1f} s cpu, peak {rec['peak_rss_gib']} GiB, "
              f"others used {rec['others_cores_avg']} cores", flush=True)
        return False


class SubTimer:
    """Wrap module-level functions of pipeline.dedup's modules: total seconds, calls and RSS after, per function.

    A function is wrapped under its name in every module that holds it, all feeding one record: a call through
    any of them counts once (each wrapper calls the original)."""

    def __init__(self) -> None:
        self.records: dict[str, dict] = {}
        self.patched: list[tuple[object, str, object]] = []

    def wrap(self, module, name: str) -> None:
        fn = getattr(module, name)
        rec = self.records.setdefault(name, {"seconds": 0.0, "calls": 0, "rss_after_gib": 0.0})

        @functools.wraps(fn)
        def timed(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                rec["seconds"] += time.perf_counter() - t
                rec["calls"] += 1
                rec["rss_after_gib"] = max(rec["rss_after_gib"], status_kib("VmRSS") / 2**20)

        setattr(module, name, timed)
        self.patched.append((module, name, fn))

    def restore(self) -> None:
        for module, name, fn in reversed(self.patched):
            setattr(module, name, fn)

    def report(self) -> dict:
        return {k: {"seconds": round(v["seconds"], 2), "calls": v["calls"],
                    "rss_after_gib": round(v["rss_after_gib"], 3)} for k, v in self.records.items() if v["calls"]}


# ----------------------------------------------------------------------------------------------- checking

def evaluate(args: argparse.Namespace, root: Path, dedup_dir: Path) -> dict:
    import pyarrow.parquet as pq

    n = args.n
    plan = layout(n, args.seed, args.dup_fraction)
    group, pairs = plan["group"], plan["pairs"]
    t = pq.read_table(dedup_dir / "groups.parquet", columns=["id", "component", "component_size", "reason"])
    assert (t.column("id").to_numpy() == np.arange(n)).all()
    comp = t.column("component").to_numpy()
    csize = t.column("component_size").to_numpy()
    reason = np.asarray(t.column("reason").to_pylist(), dtype=object)

    # planted (source, copy) pairs and all within-group pairs that ended in one component
    pair_recall = float((comp[pairs[:, 0]] == comp[pairs[:, 1]]).mean()) if len(pairs) else 1.0
    members = np.flatnonzero(group >= 0)
    g, c = group[members], comp[members]
    order = np.lexsort((c, g))
    g, c = g[order], c[order]
    gstart = np.r_[0, np.flatnonzero(np.diff(g)) + 1]
    one_comp = np.minimum.reduceat(c, gstart) == np.maximum.reduceat(c, gstart)
    gsize = np.diff(np.r_[gstart, len(g)])
    exact = one_comp & (csize[members[order][gstart]] == gsize)

    # false components: size > 1 and not inside one planted group
    grouped = np.flatnonzero(csize > 1)
    label = np.where(group[grouped] >= 0, group[grouped], plan["groups"] + grouped).astype(np.int64)
    cc = comp[grouped]
    o = np.argsort(cc, kind="stable")
    cc, label, rows = cc[o], label[o], grouped[o]
    cstart = np.r_[0, np.flatnonzero(np.diff(cc)) + 1] if len(cc) else np.zeros(0, np.int64)
    pure = np.zeros(len(cstart), bool)
    if len(cc):
        lo, hi = np.minimum.reduceat(label, cstart), np.maximum.reduceat(label, cstart)
        pure = (lo == hi) & (lo < plan["groups"])
    kinds: dict[str, int] = {}
    false_sizes = []
    bounds = np.r_[cstart, len(cc)]
    for f in np.flatnonzero(~pure):
        rs = rows[bounds[f]:bounds[f + 1]]
        present = {str(x) for x in reason[rs]} - {"keep"}
        kind = "+".join(sorted(present)) or "?"
        kinds[kind] = kinds.get(kind, 0) + 1
        false_sizes.append(len(rs))
    wrongly_grouped = int(((group < 0) & (csize > 1)).sum())
    # chance pHash pairs: each compared pair, under each orientation query (both directions but the identity's)
    from pipeline.layout import read_summary

    phash_stage = read_summary(dedup_dir)["stages"]["phash"]
    compared = n * (n - 1) / 2 if phash_stage["compared"] == "all pairs" else n * args.k
    p_hamming = sum(math.comb(64, i) for i in range(args.phash_distance + 1)) / 2**64
    out = {
        "planted_groups": int(plan["groups"]), "planted_copies": int(len(pairs)),
        "planted_pair_recall": round(pair_recall, 5),
        "planted_groups_exact": int(exact.sum()), "planted_groups_exact_fraction": round(float(exact.mean()), 5),
        "planted_groups_split": int((~one_comp).sum()),
        "components_size_gt1": int(len(cstart)), "false_components": int((~pure).sum()),
        "false_components_by_kind": kinds,
        "false_component_largest": int(max(false_sizes, default=0)),
        "unplanted_rows_grouped": wrongly_grouped,
        "largest_component": int(csize.max()) if n else 0,
        "expected_chance_phash_pairs": round((2 * phash_stage["orientations"] - 1) * compared * p_hamming, 1),
    }
    out.update(graph_checks(args, root, dedup_dir / "knn", plan))
    return out


def graph_checks(args: argparse.Namespace, root: Path, knn: Path, plan: dict) -> dict:
    """Planted pairs among the graph's candidates; recall@k against brute force on a seeded sample."""
    import pyarrow.parquet as pq

    from pipeline.roots.features import feature_columns, iter_batches, open_features, to_matrix

    pairs = plan["pairs"]
    planted = set(map(tuple, pairs.tolist()))
    fs = open_features(root)
    rng = np.random.default_rng([args.seed, 9])
    sample = np.sort(rng.choice(args.n, min(args.eval_sample, args.n), replace=False)) if args.eval_sample else \
        np.zeros(0, np.int64)
    want = np.union1d(np.unique(pairs), sample)
    graph_nb: dict[int, np.ndarray] = {}
    graph_sm: dict[int, np.ndarray] = {}
    for path in sorted(knn.glob("part-*.parquet")):
        t = pq.read_table(path)
        k = t.schema.field("neighbours").type.list_size
        ids = t.column("id").to_numpy()
        sel = np.flatnonzero(np.isin(ids, want))
        nb = t.column("neighbours").combine_chunks().values.to_numpy().reshape(-1, k)[sel]
        sm = t.column("similarities").combine_chunks().values.to_numpy().reshape(-1, k)[sel]
        for r, a, b in zip(ids[sel], nb, sm):
            graph_nb[int(r)], graph_sm[int(r)] = a, b
    found = sum(1 for s, c in planted if s in set(graph_nb[c].tolist()) or c in set(graph_nb[s].tolist()))
    out = {"graph_candidate_recall_planted": round(found / max(len(planted), 1), 5)}
    if not len(sample):
        return out
    # brute force over all vectors, streamed: exact top-k of the sample (self removed)
    k = args.k
    q = np.stack(list(_rows(fs, sample)))
    best_s = np.full((len(q), k + 1), -np.inf, np.float32)
    best_i = np.full((len(q), k + 1), -1, np.int64)
    start = 0
    for batch in iter_batches(fs, feature_columns("cls"), 65536):
        x = to_matrix(batch, "cls")
        s = q @ x.T
        ids = np.arange(start, start + len(x))
        s_all = np.concatenate([best_s, s], 1)
        i_all = np.concatenate([best_i, np.broadcast_to(ids, s.shape)], 1)
        top = np.argpartition(-s_all, k, axis=1)[:, :k + 1]
        best_s = np.take_along_axis(s_all, top, 1)
        best_i = np.take_along_axis(i_all, top, 1)
        start += len(x)
    r_at_k, r_at_1, r_strong, n_strong = [], [], 0, 0
    for row, si, ii in zip(sample, best_s, best_i):
        o = np.argsort(-si)
        si, ii = si[o], ii[o]
        keep = ii != row
        si, ii = si[keep][:k], ii[keep][:k]
        g = set(graph_nb[int(row)].tolist())
        r_at_k.append(len(g & set(ii.tolist())) / k)
        r_at_1.append(float(ii[0] in g))
        strong = ii[si > args.threshold]
        n_strong += len(strong)
        r_strong += len(g & set(strong.tolist()))
    out.update({"graph_recall_at_k_sample": round(float(np.mean(r_at_k)), 4),
                "graph_recall_top1_sample": round(float(np.mean(r_at_1)), 4),
                "graph_recall_above_threshold_sample": round(r_strong / n_strong, 4) if n_strong else None,
                "sample_rows": int(len(sample)),
                "sample_true_nn_cos_median": round(float(np.median(best_s.max(1))), 4)})
    # the median above includes self (1.0); report the second best as the typical nearest other
    second = np.sort(best_s, 1)[:, -2]
    out["sample_nearest_other_cos_median"] = round(float(np.median(second)), 4)
    out["sample_nearest_other_cos_p99"] = round(float(np.quantile(second, 0.99)), 4)
    return out


def _rows(fs, rows: np.ndarray):
    from pipeline.roots.features import feature_columns, iter_batches, to_matrix

    start, pos = 0, 0
    for batch in iter_batches(fs, feature_columns("cls"), 65536):
        end = start + batch.num_rows
        hi = np.searchsorted(rows, end)
        if hi > pos:
            x = to_matrix(batch, "cls")
            for r in rows[pos:hi]:
                yield x[r - start]
            pos = hi
        start = end


# ----------------------------------------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--out", default="bench_out/dedup_scale")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shards", type=int, default=100)
    ap.add_argument("--clusters", type=int, default=1024)
    ap.add_argument("--spread", type=float, default=1.5, help="noise / centre norm; in-cluster cos ≈ 1/(1+s²)")
    ap.add_argument("--dup-fraction", type=float, default=0.01, help="rows that are planted noisy copies")
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--threshold", type=float, default=0.6)
    ap.add_argument("--phash-distance", type=int, default=8)
    ap.add_argument("--memory-budget-gb", type=float, default=4.0)
    ap.add_argument("--factory", default=None, help="override the auto factory (e.g. IVF1264,Flat)")
    ap.add_argument("--nprobe", type=int, default=None, help="override the IVF nprobe default")
    ap.add_argument("--eval-sample", type=int, default=1000, help="rows for graph recall@k vs brute force")
    ap.add_argument("--regen", action="store_true", help="regenerate the feature root even if it matches")
    ap.add_argument("--resume", action="store_true",
                    help="keep OUT/dedup: reuse its index (with --nprobe: set it, drop the graph), "
                         "skip done graph parts")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--_generate", help=argparse.SUPPRESS)
    args = ap.parse_args()
    out = Path(args.out)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    if args._generate:
        generate(out, json.loads(args._generate))
        return

    import faiss

    from pipeline.dedup import edges as dedup_edges
    from pipeline.dedup import found as dedup_found
    from pipeline.dedup import groups as dedup_groups
    from pipeline.dedup import run as dedup_run
    from pipeline.dedup.config import DedupConfig
    from pipeline.dedup.run import run_dedup
    from pipeline.index.build import IndexConfig, build_index, load_index
    from pipeline.index.knn import build_graph
    from pipeline.layout import read_index_record, write_index_record
    from pipeline.roots.features import open_features

    params = gen_params(args)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    gen = ensure_features(out, params, args.regen)
    root = out
    dedup_dir = out / "dedup"
    if dedup_dir.exists() and not args.resume:
        shutil.rmtree(dedup_dir)
    progress = not args.no_progress
    stages: dict[str, dict] = {}
    result = {"command": " ".join([sys.executable] + sys.argv), "params": params, "generate": gen,
              "machine": {"cores": os.cpu_count(), "faiss_threads": faiss.omp_get_max_threads(),
                          "faiss": faiss.__version__, "mem_total_gib": round(
                              os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB, 1),
                          "loadavg_start": [round(x, 2) for x in os.getloadavg()]},
              "stages": stages, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    json_path = out / "dedup_scale.json"
    previous = json.loads(json_path.read_text()) if args.resume and json_path.exists() else {}
    if previous:
        result["previous_run"] = {k: previous.get(k) for k in ("command", "started", "index", "stages", "graph_probe")}

    def save() -> None:
        json_path.write_text(json.dumps(result, indent=2, sort_keys=True, default=str) + "\n")

    index_dir = dedup_dir / "index"
    record = read_index_record(index_dir) if args.resume else None
    if record and (record["provenance"]["fingerprint"] != provenance(params)["fingerprint"]
                   or (args.factory and record["factory"] != args.factory)):
        record = None
    if record is None:
        with Stage("index", stages):
            record = build_index(IndexConfig(features=str(root), out=str(index_dir),
                                             factory=args.factory, nprobe=args.nprobe,
                                             memory_budget_gb=args.memory_budget_gb, progress=progress))
    else:
        # --resume: the index of the previous run is reused; its stage record is carried over
        stages["index"] = dict(previous.get("stages", {}).get("index") or
                               {"wall_s": record["build_seconds"], "cpu_s": 0.0, "cpu_per_wall": 0.0,
                                "others_cores_avg": 0.0, "peak_rss_gib": None, "process_max_rss_gib": 0.0})
        stages["index"]["reused_from_previous_run"] = True
        if args.nprobe and record["nprobe"] != args.nprobe:
            # what IndexConfig(nprobe=...) would have recorded; load_index applies it. Graph parts made with
            # the old nprobe are dropped.
            result["nprobe_changed"] = {"from": record["nprobe"], "to": args.nprobe}
            built_at = max(p.stat().st_mtime for p in index_dir.iterdir())  # when the index was written
            record["nprobe"] = args.nprobe
            write_index_record(index_dir, record)
            done = sorted((dedup_dir / "knn" / "_done").glob("*.json")) if (dedup_dir / "knn").exists() else []
            if done:
                # the dropped parts still time the old nprobe: graph stage start ≈ index.json written
                rows = sum(json.loads(p.read_text())["rows"] for p in done)
                secs = max(p.stat().st_mtime for p in done) - built_at
                result["graph_probe"] = {"nprobe": result["nprobe_changed"]["from"], "parts_done": len(done),
                                         "rows_done": rows, "wall_s": round(secs, 1),
                                         "extrapolated_graph_wall_s": round(secs * args.n / rows, 1),
                                         "note": "wall time from the index files to the last part marker, "
                                                 "on the shared machine"}
            if (dedup_dir / "knn").exists():
                shutil.rmtree(dedup_dir / "knn")
        if (dedup_dir / "knn" / "_done").exists():
            result["graph_resumed_parts"] = len(list((dedup_dir / "knn" / "_done").glob("*.json")))
    result["index"] = {k: record[k] for k in ("factory", "index_type", "nprobe", "train_seconds", "build_seconds")}
    save()

    with Stage("graph", stages):
        t = time.perf_counter()
        loaded = load_index(index_dir)
        load_s = time.perf_counter() - t
        build_graph(open_features(root), loaded.index, "cls", dedup_dir / "knn", k=args.k, progress=progress)
        del loaded
    stages["graph"]["load_index_s"] = round(load_s, 2)
    save()

    timer = SubTimer()
    for name in ("read_meta", "read_matrix", "exact_edges", "orientation_variants", "phash_edges",
                 "phash_candidate_edges", "embedding_edges", "knn_graph", "load_index", "build_index",
                 "build_graph", "read_edges", "rescored_edges", "exact_cosine", "components", "choose_keepers",
                 "nearest_and_reason", "contaminated_ids", "write_parquet_atomic", "summarize"):
        for module in (dedup_run, dedup_found, dedup_edges, dedup_groups):  # whichever of them call it
            if callable(getattr(module, name, None)):
                timer.wrap(module, name)
    try:
        with Stage("dedup", stages):
            summary = run_dedup(DedupConfig(features=str(root), out=str(dedup_dir), k=args.k,
                                            threshold=args.threshold, phash_distance=args.phash_distance,
                                            memory_budget_gb=args.memory_budget_gb, progress=progress)).record
    finally:
        timer.restore()
    stages["dedup"]["breakdown"] = timer.report()
    if timer.records.get("build_index", {}).get("calls") or timer.records.get("build_graph", {}).get(
            "seconds", 0) > 0.5 * max(
            stages["graph"]["wall_s"], 1e-9):
        result["warning"] = "run_dedup rebuilt the index or the graph: the dedup stage includes that work"
    result["dedup_summary"] = {k: summary[k] for k in ("images", "kept", "removed", "groups", "largest_component",
                                                       "reasons", "stages", "seconds")}
    total = sum(stages[s]["wall_s"] for s in ("index", "graph", "dedup"))
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result["total"] = {"wall_s": round(total, 2), "peak_rss_gib": round(peak_kib / 2**20, 3),
                       "goal_wall_s": GOAL_SECONDS, "goal_rss_gib": GOAL_BYTES / GIB,
                       "meets_time": total <= GOAL_SECONDS, "meets_memory": peak_kib * 1024 <= GOAL_BYTES}
    save()

    t = time.perf_counter()
    result["quality"] = evaluate(args, root, dedup_dir)
    result["quality"]["eval_seconds"] = round(time.perf_counter() - t, 2)
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    result["script_seconds"] = round(time.perf_counter() - t_all, 2)
    save()
    print_table(result)
    print(f"\nwrote {json_path}")


def print_table(r: dict) -> None:
    st = r["stages"]
    print(f"\ndedup_scale: n={r['params']['n']} dim={r['params']['dim']} index={r['index']['factory']} "
          f"nprobe={r['index']['nprobe']} k={r['dedup_summary']['stages'].get('embedding', {}).get('k')}")
    print(f"{'stage':<8}{'wall s':>10}{'cpu s':>10}{'cpu/wall':>10}{'others':>8}{'peak GiB':>10}{'proc max':>10}")
    for name in ("index", "graph", "dedup"):
        s = st[name]
        print(f"{name:<8}{s['wall_s']:>10.1f}{s['cpu_s']:>10.1f}{s['cpu_per_wall']:>10.2f}"
              f"{s['others_cores_avg']:>8.2f}{s['peak_rss_gib'] or float('nan'):>10.2f}"
              f"{s['process_max_rss_gib']:>10.2f}")
    tot = r["total"]
    print(f"{'total':<8}{tot['wall_s']:>10.1f}{'':>38}{tot['peak_rss_gib']:>10.2f}")
    print(f"goal: < {GOAL_SECONDS} s: {'yes' if tot['meets_time'] else 'NO'}; "
          f"< {GOAL_BYTES / GIB:.0f} GiB: {'yes' if tot['meets_memory'] else 'NO'}")
    print("\nrun_dedup breakdown (nested, so the rows overlap: e.g. embedding_edges includes knn_graph and "
          "rescored_edges; phash_candidate_edges includes knn_graph and read_edges):")
    for name, b in st["dedup"]["breakdown"].items():
        print(f"  {name:<22}{b['seconds']:>9.1f} s  ×{b['calls']:<4} RSS after ≤ {b['rss_after_gib']:.2f} GiB")
    q = r["quality"]
    print("\nquality:", json.dumps(q, sort_keys=True))
    print("note: the machine is shared (see 'others' = cores other processes used on average); times are noisy")


if __name__ == "__main__":
    main()
