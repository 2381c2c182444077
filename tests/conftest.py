"""Shared test helpers: seeded images whose colour encodes their index, tiny shards, a tiny ViT config."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from webdataset import TarWriter

from pipeline.config import ExtractConfig

SHARED_DATA = Path(os.environ.get("DINOCURATE_SHARED_DATA",
                                  Path(__file__).resolve().parents[2] / "shared" / "data"))
# A 2-block, 64-wide DINOv2-reg4 ViT at 56 px: the real architecture, fast enough for many runs.
TINY_MODEL = "vit_small_patch14_reg4_dinov2.lvd142m"
TINY_KWARGS = (("depth", 2), ("embed_dim", 64), ("num_heads", 2))
TINY_RES = 56


def shared_data(*parts: str) -> Path:
    """A folder of ../shared/data, or skip the test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return path


def make_image(i: int, size: tuple[int, int] = (64, 48), seed: int = 0) -> Image.Image:
    """RGB image: base colour encodes i, plus seeded texture so features differ."""
    rng = np.random.default_rng(seed * 100_003 + i)
    w, h = size
    base = np.array([(i * 37) % 256, (i * 91) % 256, (i * 53) % 256], dtype=np.float64)
    arr = base + rng.normal(0, 40, (h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def jpeg_bytes(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def write_shards(root: Path, n_shards: int, per_shard: int, prefix: str = "train",
                 start: int = 0) -> tuple[list[str], list[str]]:
    """Write n tar shards of JPEG samples (+ a `cls` member); returns (shard paths, all keys)."""
    root.mkdir(parents=True, exist_ok=True)
    paths, keys = [], []
    i = start
    for s in range(n_shards):
        path = str(root / f"{prefix}-{s:06d}.tar")
        with TarWriter(path, encoder=False) as sink:
            for _ in range(per_shard):
                key = f"s{s:02d}_{i:05d}"
                sink.write({"__key__": key, "jpg": jpeg_bytes(make_image(i, (64 + (i % 5) * 8, 48))),
                            "cls": str(i % 3).encode()})
                keys.append(key)
                i += 1
        paths.append(path)
    return paths, keys


def tiny_config(out: Path, **overrides) -> ExtractConfig:
    """ExtractConfig for the tiny random-weight ViT; override anything."""
    base = dict(out=str(out), model=TINY_MODEL, weights="random", model_kwargs=TINY_KWARGS,
                resolution=TINY_RES, batch_size=4, workers=0, progress=False, device="cpu")
    base.update(overrides)
    return ExtractConfig(**base)


@pytest.fixture(scope="session", autouse=True)
def _offline_hub() -> None:
    """Tests never reach a hub."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
