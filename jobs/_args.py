"""Argument groups shared by the jobs; every default is read from the stage's config dataclass, never retyped.

An option's `dest` is the name of the config field it sets, so `config_from(Cls, args)` builds the config
from the parsed arguments. Help texts say `%(default)s`, which argparse fills with the dataclass's value.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable
from typing import Any

from pipeline.errors import UserError

# Every `parser` below may also be one of a parser's argument groups.
Group = argparse.ArgumentParser


def default(cls: type, name: str) -> Any:
    """The default of a config dataclass's field."""
    f = _field(cls, name)
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise TypeError(f"{cls.__name__}.{name} has no default")


def shown(value: Any) -> str:
    """A default as the help text shows it: tuples as comma lists."""
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return str(value)


def has_field(cls: type, name: str) -> bool:
    return any(f.name == name for f in dataclasses.fields(cls))


def _field(cls: type, name: str) -> dataclasses.Field:
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f
    raise TypeError(f"{cls.__name__} has no field {name!r}")


def option(parser: Group, cls: type, name: str, help: str | None = None, *, flag: str | None = None,
           **kwargs: Any) -> argparse.Action:
    """`--name` (dest `name`) with the default of the field `cls.name`. A bool field becomes `--name` when it
    defaults to False and `--no-name` when it defaults to True; int/float fields get their type from the
    annotation (`int | None` → int)."""
    value = default(cls, name)
    dashed = name.replace("_", "-")
    if isinstance(value, bool) and "action" not in kwargs:
        flag = flag or (f"--no-{dashed}" if value else f"--{dashed}")
        return parser.add_argument(flag, dest=name, action="store_false" if value else "store_true",
                                   default=value, help=help, **kwargs)
    if "type" not in kwargs and "action" not in kwargs:
        annotation = str(_field(cls, name).type)
        if annotation.startswith("float"):
            kwargs["type"] = float
        elif annotation.startswith("int"):
            kwargs["type"] = int
    return parser.add_argument(flag or f"--{dashed}", dest=name, default=value, help=help, **kwargs)


def config_from(cls: type, args: argparse.Namespace, **overrides: Any):
    """`cls(...)` from the parsed arguments whose dest is one of its fields; `overrides` win."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    return cls(**{**values, **overrides})


def parsed(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse `type` from a parser that raises UserError: its message becomes argparse's (exit 2)."""
    def convert_arg(text: str) -> Any:
        try:
            return convert(text)
        except UserError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    convert_arg.__name__ = convert.__name__
    return convert_arg


def comma_list(cast: Callable[[str], Any] = str) -> Callable[[str], tuple]:
    """`a,b,c` → a tuple of `cast` values (empty items dropped)."""
    def split(text: str) -> tuple:
        return tuple(cast(v.strip()) for v in text.split(",") if v.strip())

    split.__name__ = f"comma-separated {cast.__name__}"
    return split


# ------------------------------------------------------------------------------------------- shared groups
MODEL_HELP = {
    "model": "any timm model name (default: %(default)s)",
    "weights": "'hub' = the Hugging Face cache, fetched into it once when missing (not with --offline or "
               "HF_HUB_OFFLINE=1); a .safetensors/.pth path (timm or original "
               "facebookresearch DINOv2/DINOv3 layout); or 'random', for tests and dry runs, recorded in every "
               "output (default: %(default)s)",
    "model_kwargs": "extra timm.create_model arguments, e.g. 'depth=2,embed_dim=64,num_heads=2'",
    "device": "auto (cuda → npu → mps → cpu), cpu, cuda, cuda:1, npu, mps (default: %(default)s)",
    "precision": "autocast precision of the forward pass: auto = bf16 where the hardware computes it natively "
                 "(AMX or AVX512-BF16 CPUs, bf16 GPUs), else fp32; recorded in every output (default: %(default)s)",
    "compile": ("torch.compile the forward pass: auto compiles when the images left repay the compile time on this "
                "machine (its first compile takes a minute; later ones come from the cache in "
                "~/.cache/dinocurate); --compile alone is on (default: %(default)s)"),
    "threads": "intra-op CPU threads for the model (default: torch's)",
    "resolution": "input size N in pixels, or 'native' for the model's own (DINOv2: 518, recommended for patch "
                  "features and make pca); at N the image is resized to N/crop_pct and centre-cropped, as DINOv2 "
                  "evaluates (256 → 224) (default: %(default)s)",
    "batch_size": "images per forward pass (default: %(default)s)",
}
MODEL_OPTIONS = ("model", "weights", "model_kwargs", "device", "resolution", "batch_size")  # the rest: by name


def add_model_args(parser: Group, cls: type, title: str | None = "model", names: tuple[str, ...] = MODEL_OPTIONS,
                   **helps: str) -> Group:
    """The options among `names` (any keys of MODEL_HELP) that `cls` has as fields, in that order;
    `helps` replaces a help text where the job means something more specific."""
    from pipeline.extract.config import COMPILE_MODES, PRECISIONS, parse_model_kwargs, parse_resolution

    group = parser.add_argument_group(title) if title else parser
    extra: dict[str, dict] = {
        "model_kwargs": {"metavar": "K=V,...", "type": parsed(parse_model_kwargs)},
        "precision": {"choices": PRECISIONS},
        "compile": {"choices": COMPILE_MODES, "nargs": "?", "const": "on"},
        "resolution": {"metavar": "N|native", "type": parsed(parse_resolution)},
    }
    for name in names:
        if has_field(cls, name):
            option(group, cls, name, helps.get(name, MODEL_HELP[name]), **extra.get(name, {}))
    if "weights" in names and has_field(cls, "weights"):
        group.add_argument("--offline", action="store_true",
                           help="never reach the hub: sets HF_HUB_OFFLINE=1 for this job (--weights hub then only "
                                "reads the cache)")
    return group


FEATURES_HELP = ("an extract output root, or features made elsewhere: a .npy of N×D float16/float32 vectors (keys = "
                 "row numbers, or --keys) or a Parquet file/folder with a `key` column and list<float> vector "
                 "columns (name one with --feature); their outputs go to FEATURES.dinocurate/ unless --out")
FEATURE_METAVAR = "cls|patch_mean|concat|COLUMN"  # COLUMN: a vector column of Parquet made elsewhere


def add_keys_arg(parser: Group, cls: type) -> argparse.Action:
    """--keys FILE, for every stage that takes FEATURES: the keys of a .npy (one a line, in row order)."""
    return option(parser, cls, "keys", "with a .npy FEATURES: its keys, one a line in row order (or export-npy's "
                                       "keys.parquet); default: the row numbers", metavar="FILE")


EXECUTOR_HELP = ("local: processes on this machine; ray: tasks on a Ray cluster ($RAY_ADDRESS, or a local one) "
                 "(default: %(default)s)")


def add_executor_args(parser: Group, cls: type, units_help: str, units: str = "workers",
                      executor_help: str = EXECUTOR_HELP) -> Group:
    """The number of parallel units (`--workers`, `--parts`) and --executor (local processes or Ray)."""
    from pipeline.tasks import EXECUTORS

    option(parser, cls, units, units_help)
    option(parser, cls, "executor", executor_help, choices=EXECUTORS)
    return parser


PLAN_HELP = ("print what the job would choose (index, parameters) and need on this machine (peak memory, disk, "
             "time from a few seconds' calibration on a sample of these vectors), and what to change if it will "
             "not fit; builds and writes nothing (docs/scaling.md#plan)")


def add_plan_arg(parser: Group) -> argparse.Action:
    """`--plan`: the job's own choices through the memory and disk model, nothing done."""
    return parser.add_argument("--plan", action="store_true", help=PLAN_HELP)


def add_running_args(parser: Group, cls: type | None = None, log_level: str = "INFO",
                     progress: str = "no progress bar") -> Group:
    """--no-progress (when the config has a progress bar; `progress` says which bar where that is not plain)
    and --log-level ($LOG_LEVEL overrides the job's)."""
    if cls is not None and has_field(cls, "progress"):
        option(parser, cls, "progress", progress)
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", log_level),
                        help="DEBUG, INFO, WARNING or ERROR; DEBUG also shows the traceback of a user error "
                             "(default: %(default)s)")
    return parser
