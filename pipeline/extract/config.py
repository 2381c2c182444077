"""Configuration of the extract stage: one frozen dataclass with defaults that work."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipeline.errors import ConfigError
from pipeline.io.schema import META_FIELDS
from pipeline.io.stats import STATS_COLUMNS

DEFAULT_MODEL = "vit_small_patch14_reg4_dinov2.lvd142m"
# registers, gem, layers: model outputs; stats: image quality signals computed in the loader (io/stats.py)
EXTRAS = ("registers", "gem", "layers", "stats")
# The feature column each model-output extra adds, in the order the columns appear (provenance "features").
EXTRA_COLUMNS = {"gem": "patch_gem", "registers": "registers", "layers": "layers"}
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
COMPILE_MODES = ("auto", "on", "off")
DECODES = ("auto", "cpu", "gpu")
DTYPES = ("float16", "float32")
# Columns a feature file has of its own: --keep-columns cannot take these names.
RESERVED_COLUMNS = META_FIELDS + STATS_COLUMNS + ("cls", "patch_mean", "patch_gem", "registers", "layers")
RESIZE_MODES = ("fixed", "dynamic")
# DINOv2's k-NN and linear evaluations: Resize(256) then CenterCrop(224), i.e. 224/256.
EVAL_CROP_PCT = 0.875
# Pillow's own default limit is 89.5 MP (warning) and twice that (error); we refuse above this.
DEFAULT_MAX_PIXELS = 178_956_970


@dataclass(frozen=True)
class ExtractConfig:
    """Everything `run_extract` needs; the numbers-changing subset goes into the provenance fingerprint."""

    out: str
    shards: tuple[str, ...] = ()
    images: str | None = None
    model: str = DEFAULT_MODEL
    weights: str = "hub"
    model_kwargs: tuple[tuple[str, object], ...] = ()
    # Global features at DINOv2's evaluation size: resize to resolution/crop_pct (256), centre crop 224. None: the
    # model's native size and crop (DINOv2: 518 px, crop 1.0), for dense / patch work (make pca).
    resolution: int | None = 224
    crop_pct: float | None = None  # None: EVAL_CROP_PCT at a given resolution, the model's own at native size
    resize_mode: str = "fixed"
    device: str = "auto"
    precision: str = "auto"  # bf16 where the hardware computes it natively, else fp32 (device.resolve_precision)
    dtype: str = "float16"
    extras: tuple[str, ...] = ()
    last_layers: int = 4
    gem_p: float = 3.0
    batch_size: int = 32
    workers: int | None = None
    threads: int | None = None
    rank: int = 0
    world_size: int = 1
    max_pixels: int = DEFAULT_MAX_PIXELS
    jpeg_draft: bool = True
    # where JPEGs are decoded: gpu = in batches on the model's device (nvJPEG), auto = gpu on CUDA where it can
    decode: str = "auto"
    image_key: str | None = None
    image_column: str | None = None  # Parquet shards: the image column (default: found, see io/shards.py)
    key_column: str | None = None  # Parquet shards: the key column (default: key, __key__, id, else stem_row)
    # Source members / columns stored as strings beside the features (img2dataset's json, txt; url and caption
    # are lifted from a .json member when there is no member or column of that name).
    keep_columns: tuple[str, ...] = ()
    folder_shard_size: int = 1000
    # Dropped: dynamic int8 Linear layers were slower than bf16 autocast and failed parity (docs/PERFORMANCE.md,
    # int8). The field stays so that config.json files of older roots still load, and "quantize": null stays in
    # the provenance so that their fingerprints hold.
    quantize: str | None = None
    # torch.compile the forward pass: auto when the images left repay the compile time (extract/compiled.py)
    compile: str = "auto"
    progress: bool = True
    repair: bool = False  # drop shards of OUT made with other settings than its config.json, then redo them
    # Test hook (as faiss contrib's crash_at): raise after this many shards were written.
    crash_after_shards: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.compile, bool):  # config.json of roots made before auto: true/false
            object.__setattr__(self, "compile", "on" if self.compile else "off")
        if self.compile not in COMPILE_MODES:
            raise ConfigError(f"compile must be one of {', '.join(COMPILE_MODES)}, got {self.compile!r}")
        if self.decode not in DECODES:
            raise ConfigError(f"decode must be one of {', '.join(DECODES)}, got {self.decode!r}")
        if bool(self.shards) == bool(self.images):
            raise ConfigError("give exactly one input: shards (SHARDS=...) or an image folder (IMAGES=DIR)")
        if self.resize_mode not in RESIZE_MODES:
            raise ConfigError(f"resize_mode must be one of {RESIZE_MODES}, got {self.resize_mode!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        unknown = set(self.extras) - set(EXTRAS)
        if unknown:
            raise ConfigError(f"unknown extras {sorted(unknown)}; choose from {EXTRAS}")
        if self.batch_size < 1:
            raise ConfigError("batch_size must be >= 1")
        clash = [c for c in self.keep_columns if c in RESERVED_COLUMNS or c.startswith("__") or not c]
        if clash or len(set(self.keep_columns)) != len(self.keep_columns):
            raise ConfigError(f"keep_columns must be distinct names other than the feature file's own columns "
                              f"({', '.join(RESERVED_COLUMNS)}); got {', '.join(self.keep_columns)}")
        if self.workers is not None and self.workers < 0:
            raise ConfigError("workers must be >= 0")
        if not 0 <= self.rank < self.world_size:
            raise ConfigError(f"rank {self.rank} is outside world size {self.world_size}")
        if self.resolution is not None and self.resolution < 1:
            raise ConfigError("resolution must be positive")
        if self.crop_pct is not None and not 0 < self.crop_pct <= 1:
            raise ConfigError(f"crop_pct must be in (0, 1], got {self.crop_pct}")
        if self.folder_shard_size < 1:
            raise ConfigError("folder_shard_size must be >= 1")
        if self.last_layers < 1:
            raise ConfigError("last_layers must be >= 1")
        if self.quantize is not None:
            raise ConfigError(f"quantize={self.quantize!r}: the dynamic int8 path was dropped (slower than bf16 "
                              "autocast and outside the parity criteria); --precision auto picks bf16 where the CPU "
                              "computes it natively")

    def to_json(self) -> dict:
        return asdict(self)


def rank_from_env() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) as torchrun sets them; (0, 1, 0) outside torchrun."""
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local = int(os.environ.get("LOCAL_RANK", 0))
    return rank, world, local


def parse_resolution(text: str) -> int | None:
    """`--resolution 224` → 224; `native` (or `model`) → None, the model's own size."""
    if text.strip().lower() in ("native", "model", "none"):
        return None
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"--resolution takes a number of pixels or 'native', got {text!r}") from None


def parse_model_kwargs(text: str | None) -> tuple[tuple[str, object], ...]:
    """`depth=2,embed_dim=64,img_size=56` → sorted (name, value) pairs with ints/floats/bools parsed."""
    if not text:
        return ()
    pairs = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if "=" not in item:
            raise ConfigError(f"model kwarg {item!r} is not name=value")
        name, raw = (s.strip() for s in item.split("=", 1))
        pairs.append((name, _parse_scalar(raw)))
    return tuple(sorted(pairs))


def _parse_scalar(raw: str) -> object:
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw


def default_demo_dir() -> str:
    """Where the demo writes unless told: the user's cache ($XDG_CACHE_HOME, else ~/.cache), never the current
    folder (nothing lands in the repository by default)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(cache) / "dinocurate" / "demo")


@dataclass(frozen=True)
class DemoConfig:
    out: str = field(default_factory=default_demo_dir)  # demo folder: photos/, shards/, features-<weights>/
    model: str = DEFAULT_MODEL
    weights: str | None = None  # None: the hub cache if it has the model, else random weights (announced)
    resolution: int = 224  # small, for speed
    progress: bool = True


@dataclass(frozen=True)
class PackConfig:
    """`pack_folder` as the command line runs it: an image folder → webdataset shards + shards.txt."""

    images: str  # image folder, read recursively
    out: str  # folder for <prefix>-NNNNNN.tar and shards.txt
    shard_size: int = 1000  # images per shard
    prefix: str = "shard"  # shard file name prefix
    progress: bool = True

    def __post_init__(self) -> None:
        if self.shard_size < 1:
            raise ConfigError(f"shard_size must be >= 1, got {self.shard_size}")
