"""Balanced sampling on a long-tailed pool: concept coverage of random, plain hierarchical and resampling
hierarchical k-means sampling at the same budget (Vo et al. 2024), with wall time and peak memory.

    .venv/bin/python benchmarks/long_tail.py --vectors 1000000            # the full size: 1M × 384, 3,000 concepts

The pool is made in code, seeded: concept sizes follow a power law (size ∝ rank^-alpha, at least --min-size),
concepts sit in super-groups (siblings at cosine ≈ 0.5, as breeds of one animal), and every concept has the same
number of sub-modes (--modes): concepts share one spread and differ only in how many images they have, the
paper's premise (a long-tailed density over the support of the data). The ground-truth concept of every vector
is known, so each selection is scored by: coverage (share of concepts with at least one image selected),
rare coverage (the same over the smallest half of the concepts), the entropy of the selected concept histogram
(nats; log(concepts) when perfectly even) and the share taken by the largest concept. The budget defaults to
5 images per concept (a perfectly balanced selection could hold every concept five times).

Methods: `random` (uniform without replacement), `plain` (hierarchical k-means without resampling: the plan's
clusters with 0 steps everywhere) and `resampling` (the plan as curate resolves it for this pool size, or
--levels-k / --resample-steps / --resample-size), both sampled with --sampling at the leaves.

    .venv/bin/python benchmarks/long_tail.py --vectors 4000 --dim 32 --concepts 100 --out /tmp/lt   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CHUNK = 65536


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def concept_sizes(n: int, concepts: int, alpha: float = 1.1, min_size: int = 5) -> np.ndarray:
    """Power-law sizes summing to n, largest first, none below min_size."""
    if n < concepts * min_size:
        raise SystemExit(f"--vectors {n} cannot hold {concepts} concepts of at least {min_size}")
    w = 1.0 / np.arange(1, concepts + 1) ** alpha
    sizes = min_size + np.floor((n - concepts * min_size) * w / w.sum()).astype(np.int64)
    sizes[0] += n - sizes.sum()
    return sizes


def long_tail_pool(n: int, concepts: int, dim: int = 384, alpha: float = 1.1, modes: int = 4, min_size: int = 5,
                   per_group: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vectors (n, dim) float16 unit rows in random order, concept of each row, size of each concept)."""
    rng = np.random.default_rng(seed)
    sizes = concept_sizes(n, concepts, alpha, min_size)
    noise = lambda rows, scale: scale * rng.normal(size=(rows, dim)).astype(np.float32) / np.sqrt(dim)  # noqa: E731
    groups = unit(rng.normal(size=(max(2, concepts // per_group), dim)).astype(np.float32))
    centres = unit(groups[rng.integers(len(groups), size=concepts)] + noise(concepts, 1.0))  # cos 0.7 to group
    mode_centres = unit(np.repeat(centres, modes, axis=0) + noise(concepts * modes, 0.5))  # cos 0.9 to concept
    truth = rng.permutation(np.repeat(np.arange(concepts, dtype=np.int32), sizes))
    mode = truth.astype(np.int64) * modes + rng.integers(modes, size=n)
    x = np.empty((n, dim), np.float16)
    for s in range(0, n, CHUNK):
        e = min(n, s + CHUNK)
        x[s:e] = unit(mode_centres[mode[s:e]] + noise(e - s, 0.6))  # cos 0.85 to the mode
    return x, truth, sizes


def rare_concepts(sizes: np.ndarray) -> np.ndarray:
    """The smallest half of the concepts (ties: the later concept is the rarer)."""
    return np.lexsort((-np.arange(len(sizes)), sizes))[: len(sizes) // 2]


def score(ids: np.ndarray, truth: np.ndarray, sizes: np.ndarray) -> dict:
    counts = np.bincount(truth[ids], minlength=len(sizes))
    p = counts[counts > 0] / max(1, counts.sum())
    return {"selected": int(len(ids)), "coverage": round(float((counts > 0).mean()), 4),
            "rare_coverage": round(float((counts[rare_concepts(sizes)] > 0).mean()), 4),
            "entropy": round(float(-(p * np.log(p)).sum()), 4),
            "largest_concept_share": round(float(counts[np.argmax(sizes)] / max(1, counts.sum())), 4)}


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def comma_ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def run(args: argparse.Namespace) -> dict:
    """Every method on one pool; the result as written to long_tail.json."""
    from pipeline.curate.cluster import hierarchical_sample
    from pipeline.curate.hkmeans import HierarchyPlan, hierarchical_kmeans, resolve_plan

    concepts = args.concepts or max(10, round(3 * math.sqrt(args.vectors)))
    budget = args.budget or 5 * concepts
    t0 = time.perf_counter()
    x, truth, sizes = long_tail_pool(args.vectors, concepts, args.dim, args.alpha, args.modes, args.min_size,
                                     seed=args.seed)
    result = {"params": {**vars(args), "concepts": concepts, "budget": budget},
              "pool": {"vectors": len(x), "dim": args.dim, "concepts": concepts, "largest": int(sizes.max()),
                       "smallest": int(sizes.min()), "median": float(np.median(sizes)),
                       "rare_concepts": len(sizes) // 2, "rare_at_most": int(sizes[rare_concepts(sizes)].max()),
                       "generate_seconds": round(time.perf_counter() - t0, 1),
                       "random_expected_rare_coverage": round(float(np.mean(
                           1 - (1 - budget / len(x)) ** sizes[rare_concepts(sizes)])), 4)},
              "methods": {}}
    plan = resolve_plan(len(x), args.levels, args.levels_k, args.resample_steps, args.resample_size)
    plans = {"plain": HierarchyPlan(plan.ks, (0,) * len(plan.ks), plan.sizes), "resampling": plan}
    rng = np.random.default_rng(args.seed)
    t = time.perf_counter()
    chosen = {"random": np.sort(rng.choice(len(x), min(budget, len(x)), replace=False))}
    seconds = {"random": time.perf_counter() - t}
    for name, p in plans.items():
        t = time.perf_counter()
        levels = hierarchical_kmeans(x, p, seed=args.seed, progress=args.progress)
        chosen[name] = hierarchical_sample(levels, budget, args.sampling, seed=args.seed)
        seconds[name] = time.perf_counter() - t
        result["methods"][name] = {"plan": {"ks": list(p.ks), "steps": list(p.steps), "sizes": list(p.sizes)}}
    for name, ids in chosen.items():
        result["methods"].setdefault(name, {}).update(score(ids, truth, sizes))
        result["methods"][name]["seconds"] = round(seconds[name], 1)
        if name != "random":
            result["methods"][name]["peak_rss_gib_so_far"] = round(peak_gib(), 2)
    result["peak_rss_gib"] = round(peak_gib(), 2)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vectors", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--concepts", type=int, default=None, help="default 3·√vectors (3,000 at 1M)")
    p.add_argument("--alpha", type=float, default=1.1, help="power-law exponent of concept sizes")
    p.add_argument("--modes", type=int, default=4, help="sub-modes per concept")
    p.add_argument("--min-size", type=int, default=5, help="images of the rarest concepts at least")
    p.add_argument("--budget", type=int, default=None, help="images selected by every method (default 5 per concept)")
    p.add_argument("--levels", type=int, default=None, help="as curate --levels (default: by pool size)")
    p.add_argument("--levels-k", type=comma_ints, default=(), help="as curate --levels-k")
    p.add_argument("--resample-steps", type=comma_ints, default=(), help="as curate --resample-steps")
    p.add_argument("--resample-size", type=comma_ints, default=(), help="as curate --resample-size")
    p.add_argument("--sampling", default="random", choices=["random", "closest"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench_out/long_tail")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    args = p.parse_args()
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for quiet in ("faiss", "pipeline.index.kmeans"):  # Faiss's loader; "clusters are coarse" on every step
        logging.getLogger(quiet).setLevel(logging.WARNING)
    result = run(args)
    pool = result["pool"]
    print(f"long_tail: {pool['vectors']} × {pool['dim']}, {pool['concepts']} concepts of {pool['smallest']}–"
          f"{pool['largest']} images (rare half: ≤ {pool['rare_at_most']}), budget {result['params']['budget']}")
    for name, m in result["methods"].items():
        print(f"{name:>11}: coverage {m['coverage']:.1%}, rare coverage {m['rare_coverage']:.1%}, entropy "
              f"{m['entropy']:.3f} (max {math.log(pool['concepts']):.3f}), largest concept "
              f"{m['largest_concept_share']:.1%} of the selection, {m['seconds']:.1f} s", flush=True)
    print(f"peak RSS {result['peak_rss_gib']:.2f} GiB")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "long_tail.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"-> {out}/long_tail.json")


if __name__ == "__main__":
    main()
