"""The bench's and the parity check's configs, apart from their torch-heavy runs: `--help` stays quick."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import ConfigError
from pipeline.extract.config import DEFAULT_MODEL

BENCH_PRECISIONS = ("fp32", "bf16", "fp16")  # what --precisions takes (fp16: accelerators only)


@dataclass(frozen=True)
class BenchConfig:
    """What `run_bench` measures; the defaults fit in ~6 minutes on a 2-core CPU (more where bf16 is native:
    the backbone and end-to-end are measured once per precision)."""

    out: str = "bench_out"  # folder for the packed shards, bench.json and bench.png
    photos: str | None = None  # JPEG folder; default: ../shared/data/pimmi_copydays_like, else generated ones
    model: str = DEFAULT_MODEL
    weights: str = "random"  # throughput does not depend on the weights' values
    model_kwargs: tuple[tuple[str, object], ...] = ()
    device: str = "auto"
    resolution: int = 224
    batch_size: int = 16  # batch of the end-to-end comparison
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32)  # backbone sweep
    images: int = 400  # real JPEGs for the end-to-end run
    naive_images: int = 64
    warmup: int | None = None  # per batch size of the sweep (default: 2)
    repeats: int | None = None  # per batch size of the sweep (default: ~64 images' worth)
    workers: int | None = None
    threads: int | None = None
    fast_paths: bool = True  # torch.compile and dynamic resolution against fp32
    compile: bool = True  # torch.compile among the fast paths (~1 min)
    rounds: int = 3  # end-to-end runs per precision, each between two backbone measurements
    # inside each run, the backbone alone is timed after every this many batches (bench/paired.py): ~1/3 of the
    # run's wall at 2, and its ratio then covers the same seconds as the run
    reference_every: int = 2
    loader_photos: int = 200  # real photos for the loader's per-stage costs
    # photos for the naive loop vs make extract eager / --compile auto cold and warm (bench/versus.py); 0: skipped
    versus_naive: int = 0
    matmul_size: int = 2048  # side of the matrix products that measure the machine's limits
    # Precisions of the backbone and end-to-end runs, fp32 always among them (the reference); None: every
    # precision the hardware computes natively (bf16 on AMX / AVX512-BF16 CPUs and bf16 GPUs).
    precisions: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.precisions is not None:
            unknown = [p for p in self.precisions if p not in BENCH_PRECISIONS]
            if unknown or not self.precisions:
                raise ConfigError(f"precisions must be among {','.join(BENCH_PRECISIONS)}, got "
                                  f"{','.join(unknown) or 'none'}")
        if self.versus_naive < 0:
            raise ConfigError(f"versus_naive must be >= 0, got {self.versus_naive}")
        if min(self.images, self.naive_images, self.rounds, self.loader_photos, self.reference_every) < 1:
            raise ConfigError("images, naive_images, rounds, loader_photos and reference_every must be >= 1")
        if not self.batch_sizes or min(self.batch_sizes) < 1 or self.batch_size < 1:
            raise ConfigError(f"batch sizes must be >= 1, got {self.batch_size} and {list(self.batch_sizes)}")


@dataclass(frozen=True)
class ParityConfig:
    """What `run_parity_check` compares: the model on a few real photos, every pair of `run_parity`."""

    out: str = "bench_out"  # folder for parity.json (and generated photos when no real ones are here)
    photos: str | None = None  # JPEG folder; default: ../shared/data/unsplash_coenm, else generated ones
    model: str = DEFAULT_MODEL
    weights: str = "random"
    model_kwargs: tuple[tuple[str, object], ...] = ()
    resolution: int = 224
    images: int = 16  # real photos compared
    compile: bool = False  # also torch.compile vs eager (~1 min)

    def __post_init__(self) -> None:
        if self.images < 1:
            raise ConfigError(f"images must be >= 1, got {self.images}")
