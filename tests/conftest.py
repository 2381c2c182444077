"""Shared test helpers: seeded images whose colour encodes their index, tiny shards, a tiny ViT config."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from webdataset import TarWriter

from pipeline.extract.config import ExtractConfig

SHARED_DATA = Path(os.environ.get("DINOCURATE_SHARED_DATA",
                                  Path(__file__).resolve().parents[2] / "shared" / "data"))
# A 2-block, 64-wide DINOv2-reg4 ViT at 56 px: the real architecture, fast enough for many runs.
TINY_MODEL = "vit_small_patch14_reg4_dinov2.lvd142m"
TINY_KWARGS = (("depth", 2), ("embed_dim", 64), ("num_heads", 2))
TINY_RES = 56
REPO = Path(__file__).resolve().parents[1]
# The tiny random-weight model as command-line options (what tests pass to `python -m jobs.<stage>`)
TINY_CLI_ARGS = ("--weights", "random", "--model", TINY_MODEL, "--resolution", str(TINY_RES),
                 "--model-kwargs", ",".join(f"{k}={v}" for k, v in TINY_KWARGS), "--workers", "0", "--no-progress")


def run_module(*args: str) -> subprocess.CompletedProcess:
    """`python -m <args>` from the repository root, as a user runs a job; asserts exit 0."""
    proc = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def folder_with_copies(photos: Path, others: int) -> None:
    """a.png, its byte-identical trip/a_copy.png and mirrored trip/a_mirror.png, and `others` distinct images."""
    from PIL import ImageOps

    (photos / "trip").mkdir(parents=True)
    base = make_image(7, (160, 120))
    base.save(photos / "a.png")
    base.save(photos / "trip" / "a_copy.png")
    ImageOps.mirror(base).save(photos / "trip" / "a_mirror.png")
    for i in range(others):
        make_image(20 + i, (160, 120)).save(photos / f"other{i}.png")


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
    # fp32: tests compare against direct fp32 forwards; `auto` (bf16 on AMX CPUs) has tests of its own
    base = dict(out=str(out), model=TINY_MODEL, weights="random", model_kwargs=TINY_KWARGS,
                resolution=TINY_RES, batch_size=4, workers=0, progress=False, device="cpu", precision="fp32")
    base.update(overrides)
    return ExtractConfig(**base)


PILLOW_PIXEL_LIMIT = Image.MAX_IMAGE_PIXELS  # Pillow's own default, before any test ran


@pytest.fixture(autouse=True)
def _pillow_limit(monkeypatch):
    """decode_image sets Image.MAX_IMAGE_PIXELS process-wide: every test starts from Pillow's default and
    leaves it there (a server test's low limit must not leak into the next file)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", PILLOW_PIXEL_LIMIT)


@pytest.fixture(scope="session", autouse=True)
def _offline_hub() -> None:
    """Tests never reach a hub."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def _own_cache(tmp_path_factory) -> None:
    """The compile ledger and graphs of `--compile auto` in a cache of the session's own: what the user's runs
    measured never decides a test's run, and tests never write into the user's cache."""
    os.environ["DINOCURATE_CACHE"] = str(tmp_path_factory.mktemp("dinocurate-cache"))


def write_feature_root(root: Path, vectors: np.ndarray, keys: list[str] | None = None, per_shard: int = 50,
                       sha1: list[bytes] | None = None, phash: np.ndarray | None = None,
                       phash_mirror: np.ndarray | None = None, pixels: np.ndarray | None = None,
                       provenance: dict | None = None, dtype: str = "float32") -> list[str]:
    """An extract output root made directly from arrays (as `run_extract` would write it); returns keys."""
    import hashlib

    from pipeline.io.files import write_parquet_atomic
    from pipeline.io.schema import feature_schema, feature_table
    from pipeline.provenance import fingerprint

    n, d = vectors.shape
    keys = keys or [f"img{i:06d}" for i in range(n)]
    rng = np.random.default_rng(12345)
    sha1 = sha1 or [hashlib.sha1(k.encode()).digest() for k in keys]
    phash = rng.integers(0, 2**63, n, dtype=np.uint64) * 2 + 1 if phash is None else phash
    phash_mirror = ~phash if phash_mirror is None else phash_mirror  # far from everything by default
    pixels = np.full(n, 100 * 100) if pixels is None else pixels
    prov = provenance or {"model": "test", "weights": {"source": "file", "sha256": "ab" * 32, "path": None},
                          "input_size": [3, 56, 56], "resize_mode": "fixed"}
    prov.setdefault("fingerprint", fingerprint(prov))
    schema = feature_schema(prov, {"cls": d, "patch_mean": d}, dtype)
    for s, start in enumerate(range(0, n, per_shard)):
        sl = slice(start, min(start + per_shard, n))
        m = sl.stop - sl.start
        rows = {"key": keys[sl], "shard": [f"part-{s:04d}"] * m, "index": list(range(m)),
                "width": [int(p) for p in pixels[sl]], "height": [1] * m, "sha1": sha1[sl],
                "phash": [int(x) for x in phash[sl]], "phash_mirror": [int(x) for x in phash_mirror[sl]],
                "phash_flip": [int(x) for x in phash_mirror[sl]], "phash_rot180": [int(x) for x in phash_mirror[sl]]}
        feats = {"cls": vectors[sl], "patch_mean": vectors[sl][:, ::-1]}
        write_parquet_atomic(feature_table(schema, rows, feats), root / "features" / f"part-{s:04d}.parquet")
    return keys


def clustered_vectors(n: int, d: int, clusters: int, spread: float = 0.3, seed: int = 0) -> np.ndarray:
    """Seeded unit vectors around random centres (what real embeddings look like to an index)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    x = centres[rng.integers(0, clusters, n)] + spread * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


# A provenance record as extract writes it: a nested field, a field outside the fingerprint, non-ASCII text.
PROVENANCE = {"fingerprint": "fp-1", "model": "vit_small_patch14_reg4_dinov2.lvd142m", "resolution": 224,
              "preprocess": {"mean": [0.485, 0.456, 0.406], "resize": "fixed"}, "torch": "2.9.1",
              "note": "unicode ✓ é"}
PHASHES = [0, 1, 2**63 - 1, 2**63, 2**63 + 12345, 2**64 - 1]  # the uint64 edges: 0, 2**63, 2**64 - 1


def meta_fields() -> list:
    """The metadata columns every feature file has (a schema without features holds exactly those)."""
    from pipeline.io.schema import feature_schema

    return list(feature_schema({}, {}, "float32"))


def meta_rows(n: int = 6) -> dict[str, list]:
    """Metadata columns of n feature rows (any column added to the schema later is filled by its type)."""
    import hashlib

    import pyarrow as pa

    out = {
        "key": [f"k{i:03d}" for i in range(n)],
        "shard": ["train-000001"] * n,
        "index": list(range(n)),
        "width": [64 + i for i in range(n)],
        "height": [48 - i for i in range(n)],
        "sha1": [hashlib.sha1(str(i).encode()).digest() for i in range(n)],
        "phash": PHASHES[:n],
    }
    for field in meta_fields():
        if field.name not in out:
            if field.type == pa.uint64():
                out[field.name] = PHASHES[::-1][:n]
            elif pa.types.is_integer(field.type):
                out[field.name] = [3 * i for i in range(n)]
            else:
                out[field.name] = [f"{field.name}-{i}" for i in range(n)]
    return out


def feature_arrays(n: int = 6, widths=(("cls", 8), ("patch_mean", 3))) -> dict[str, np.ndarray]:
    """Seeded float32 feature arrays, one (n, d) array per (name, d)."""
    rng = np.random.default_rng(11)
    return {name: rng.normal(0, 3, (n, d)).astype(np.float32) for name, d in widths}


def listing(path) -> list[str]:
    """The sorted names in a folder (atomic writes must leave nothing else behind)."""
    return sorted(os.listdir(path))
