"""Which weights to load: `random` (only by name), the Hugging Face cache (never the network), or a file."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import timm

from pipeline.errors import WeightsError

log = logging.getLogger(__name__)

RANDOM_WEIGHTS_SEED = 0
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


@dataclass(frozen=True)
class Weights:
    source: str  # "hub" | "file" | "random"
    path: str | None
    sha256: str  # of the weights file, or the word "random"
    seed: int | None = None  # torch seed of a random init

    def record(self) -> dict:
        record = {"source": self.source, "path": self.path, "sha256": self.sha256}
        if self.seed is not None:
            record["seed"] = self.seed
        return record


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def resolve_weights(model_name: str, weights: str) -> Weights:
    """`random` (only by name), `hub` (the Hugging Face cache, never the network), or a local file."""
    if weights == "random":
        log.warning("using RANDOM weights for %s, as asked: features are for testing, not for use", model_name)
        return Weights("random", None, "random", seed=RANDOM_WEIGHTS_SEED)
    if weights == "hub":
        path = _hub_cached_file(model_name)
        return Weights("hub", path, sha256_file(path))
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsError(f"weights file {weights!r} does not exist. --weights takes 'hub', 'random', or a "
                           f"path to a {'/'.join(WEIGHT_SUFFIXES)} file")
    if path.suffix.lower() not in WEIGHT_SUFFIXES:
        raise WeightsError(f"weights file {weights!r} is not one of {WEIGHT_SUFFIXES}")
    return Weights("file", str(path.resolve()), sha256_file(path))


def _hub_cached_file(model_name: str) -> str:
    from huggingface_hub import try_to_load_from_cache

    try:
        cfg = timm.models.get_pretrained_cfg(model_name)
    except RuntimeError as exc:
        raise WeightsError(f"timm knows no pretrained weights for {model_name!r}: {exc}") from exc
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not repo:
        raise WeightsError(f"timm has no Hugging Face hub id for {model_name!r}; pass --weights PATH")
    names = [cfg.hf_hub_filename] if getattr(cfg, "hf_hub_filename", None) else []
    names += ["model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"]
    for name in names:
        found = try_to_load_from_cache(repo, name)
        if isinstance(found, str) and os.path.isfile(found):
            return found
    raise WeightsError(
        f"no weights for {model_name!r} in the Hugging Face cache (looked for {repo}/{names[0]} under "
        f"{os.environ.get('HF_HUB_CACHE') or os.environ.get('HF_HOME') or '~/.cache/huggingface'}). "
        f"This job never downloads. Either fetch them once where there is network "
        f"(`huggingface-cli download {repo}`) and copy the cache here, or pass a local file with "
        f"--weights PATH (.safetensors or .pth; original facebookresearch DINOv2/DINOv3 checkpoints work), "
        f"or --weights random for a test run."
    )


