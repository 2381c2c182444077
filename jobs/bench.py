"""`python -m jobs.bench`: images/s per precision against the machine's limits, in one process (ratios hold)."""

from __future__ import annotations

import argparse
import shlex
import sys

from jobs._args import add_model_args, add_running_args, comma_list, config_from, default, option, shown
from jobs._cli import run_command

EPILOG = """examples:
  python -m jobs.bench                              # ~8 minutes on a 2-core CPU with bf16 (fp32 and bf16)
  python -m jobs.bench --warmup 10 --repeats 50     # the seed report's format
  python -m jobs.bench --precisions fp32            # fp32 only, also where bf16 is native
  python -m jobs.bench --versus-naive 4096 --rounds 1 --no-fast-paths   # the naive loop vs eager vs compiled
the report opens with the precision --precision auto picks here, why, and its end-to-end/backbone ratio;
then the machine (CPU, cores, threads, kernel flags, torch's and Faiss's build) and its matmul limits.
writes OUT/bench.json and OUT/bench.png; the JPEGs are packed into OUT/shards-N once and reused."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from pipeline.bench.config import BenchConfig

    option(p, BenchConfig, "out", "folder for shards, bench.json, bench.png (default: %(default)s)")
    option(p, BenchConfig, "photos", "JPEG folder (default: ../shared/data/pimmi_copydays_like when present, "
                                     "else generated 512×341 JPEGs)", metavar="DIR")
    add_model_args(p, BenchConfig, names=("model", "weights", "model_kwargs", "device", "resolution", "threads"),
                   weights="hub | PATH | random: throughput does not depend on the weights' values "
                           "(default: %(default)s)",
                   resolution="input size N (default: %(default)s)")
    m = p.add_argument_group("measurements")
    option(m, BenchConfig, "batch_size", "batch of the end-to-end comparison (default: %(default)s)")
    option(m, BenchConfig, "batch_sizes", f"backbone sweep (default: {shown(default(BenchConfig, 'batch_sizes'))})",
           type=comma_list(int))
    option(m, BenchConfig, "images", "real JPEGs for the end-to-end run (default: %(default)s)")
    option(m, BenchConfig, "rounds", "end-to-end runs per precision, each between two backbone measurements; the "
                                     "ratio is the median of the rounds' (default: %(default)s)")
    option(m, BenchConfig, "reference_every", "inside each end-to-end run, time the backbone alone after every N "
                                              "batches, with the loader's workers paused: each round's ratio is "
                                              "over it, the same seconds as the run (default: %(default)s)",
           metavar="N")
    option(m, BenchConfig, "loader_photos", "photos for the loader's per-stage costs (default: %(default)s)")
    option(m, BenchConfig, "naive_images", "JPEGs for the naive timm loop (default: %(default)s)")
    option(m, BenchConfig, "versus_naive", "also, on N photos: the naive loop, make extract eager, and make extract "
                                           "with --compile auto on a cold then a warm compile cache, wall time with "
                                           "start-up (N >= 4000 takes ~10 minutes on 2 cores; default: skipped)",
           metavar="N")
    option(m, BenchConfig, "warmup", "per batch size (default: 2)")
    option(m, BenchConfig, "repeats", "per batch size (default: ~64 images' worth)")
    option(m, BenchConfig, "workers", "DataLoader workers of the end-to-end run (default: as extract chooses)")
    option(m, BenchConfig, "fast_paths", "skip torch.compile and dynamic resolution")
    option(m, BenchConfig, "compile", "skip torch.compile (~1 min)")
    option(m, BenchConfig, "precisions", "precisions of the backbone and end-to-end runs, e.g. fp32,bf16; fp32 is "
                                         "always measured (the reference) (default: every precision the hardware "
                                         "computes natively: fp32, and bf16 on AMX / AVX512-BF16 CPUs and bf16 GPUs)",
           type=comma_list(str), metavar="P,...")
    option(m, BenchConfig, "matmul_size", "side of the matrix products that measure each precision's limit "
                                          "(default: %(default)s)")
    p.add_argument("--record", metavar="FILE", help="also append this run's row (date, CPU, flags, cores, load, "
                   "torch, command, ratios) to FILE, e.g. benchmarks/results/bench.json; then make perf-page")
    add_running_args(p, log_level="WARNING")


def run(args: argparse.Namespace) -> int:
    from pipeline.bench.config import BenchConfig
    from pipeline.bench.run import format_bench, run_bench

    cfg = config_from(BenchConfig, args)
    done = run_bench(cfg)
    print(format_bench(done.record))
    print(f"-> {done.path}, {done.plot}")
    if args.record:
        from pipeline.bench.perfpage import append_row, bench_row

        append_row(args.record, bench_row(done.record, shlex.join(["python", "-m", "jobs.bench", *sys.argv[1:]])))
        print(f"-> {args.record} (one row more; make perf-page redraws docs/PERFORMANCE.md)")
    return 0


def main(argv: list[str] | None = None) -> None:
    run_command(__spec__.name, argv)


if __name__ == "__main__":
    main()
