"""--decode gpu end to end on the CPU (torchvision's decoder has the same API): rows, fallbacks, failures, parity."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from pipeline.errors import ConfigError
from pipeline.extract import device_batches, loader
from pipeline.extract.backbone import create_backbone
from pipeline.extract.device_batches import resolve_decode
from pipeline.extract.device_decode import Encoded
from pipeline.extract.runner import run_extract
from pipeline.io.phash import hamming64
from tests.conftest import jpeg_bytes, tiny_config

# the device path's pHash against the CPU path's on the same photo: the bound tests/extract/test_device_decode.py
# measures on the shared photos
PHASH_BITS = 2


def photo(i: int, size=(320, 240)) -> Image.Image:
    """A smooth seeded photo-like image (gradients + blobs), as photos are: noise is the decoders' worst case."""
    rng = np.random.default_rng(i)
    w, h = size
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    arr = np.stack([np.sin(x * rng.uniform(2, 9) + rng.uniform(0, 6)) * 100 + 128,
                    np.cos(y * rng.uniform(2, 9) + rng.uniform(0, 6)) * 100 + 128,
                    np.sin((x + y) * rng.uniform(2, 9)) * 100 + 128], axis=-1)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


@pytest.fixture
def folder(tmp_path):
    """Six JPEGs the device decodes (one greyscale, one EXIF-rotated), and what it hands to the CPU: a PNG, a
    progressive JPEG, a CMYK JPEG, and a JPEG cut off in its scan (fails everywhere)."""
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(4):
        photo(i, (320 + 16 * i, 240)).save(root / f"j{i}.jpg", quality=92)
    photo(4).convert("L").save(root / "grey.jpg", quality=92)
    exif = Image.Exif()
    exif[0x0112] = 6
    photo(5, (320, 200)).save(root / "rotated.jpg", quality=92, exif=exif)
    photo(6).save(root / "lossless.png")
    photo(7).save(root / "progressive.jpg", quality=92, progressive=True)
    photo(8).convert("CMYK").save(root / "cmyk.jpg", quality=92)
    good = jpeg_bytes(photo(9), quality=92)
    (root / "broken.jpg").write_bytes(good[:good.index(b"\xff\xda") + 200])
    return root


def rows(out) -> pd.DataFrame:
    files = sorted((out / "features").glob("*.parquet"))
    return pd.concat([pq.read_table(f).to_pandas() for f in files]).set_index("key").sort_index()


def failures(out) -> pd.DataFrame:
    files = sorted((out / "failures").glob("*.parquet"))
    return pd.concat([pq.read_table(f).to_pandas() for f in files])


def test_the_device_path_gives_every_image_a_row_or_a_failure_as_the_cpu_path_does(tmp_path, folder, caplog):
    cpu_out, dev_out = tmp_path / "cpu", tmp_path / "dev"
    run_extract(tiny_config(cpu_out, images=str(folder), decode="cpu"))
    with caplog.at_level(logging.INFO):
        stats = run_extract(tiny_config(dev_out, images=str(folder), decode="gpu"))
    assert "decode: device (--decode gpu)" in caplog.text
    a, b = rows(cpu_out), rows(dev_out)
    assert list(a.index) == list(b.index) == sorted(
        ["j0.jpg", "j1.jpg", "j2.jpg", "j3.jpg", "grey.jpg", "rotated.jpg", "lossless.png", "progressive.jpg",
         "cmyk.jpg"])
    assert stats.images == 9 and stats.failures == 1
    fa, fb = failures(cpu_out), failures(dev_out)
    assert list(fa["key"]) == list(fb["key"]) == ["broken.jpg"]
    assert list(fa["stage"]) == list(fb["stage"]) and list(fa["reason"]) == list(fb["reason"])
    for col in ("sha1", "width", "height"):
        assert list(a[col]) == list(b[col]), col
    assert (a.loc["rotated.jpg", "width"], a.loc["rotated.jpg", "height"]) == (200, 320)
    bits = [hamming64(int(x), int(y)) for x, y in zip(a["phash"], b["phash"])]
    assert max(bits) <= PHASH_BITS, bits
    for name in ("lossless.png", "progressive.jpg", "cmyk.jpg"):  # the CPU path in both runs: the same hash
        assert a.loc[name, "phash"] == b.loc[name, "phash"]
    ca, cb = np.stack(a["cls"].to_numpy()), np.stack(b["cls"].to_numpy())
    cos = (ca * cb).sum(1) / np.linalg.norm(ca, axis=1) / np.linalg.norm(cb, axis=1)
    assert cos.min() > 0.99, cos
    config = json.loads((dev_out / "config.json").read_text())
    cpu_config = json.loads((cpu_out / "config.json").read_text())
    assert config["provenance"]["decode"] == "device" and cpu_config["provenance"]["decode"] == "cpu"
    assert config["provenance"]["fingerprint"] == cpu_config["provenance"]["fingerprint"]  # one root either way


def test_a_jpeg_the_device_fails_on_takes_the_cpu_path_and_keeps_its_place(tmp_path, folder, monkeypatch):
    """Every item of every batch refused on the device (the cut-off JPEG let through the probe too): the rows come
    from the CPU path, and the JPEG that fails there as well is one failure row of its shard, once."""
    real = device_batches.DeviceDecoder.__call__
    probe = loader.probe_jpeg

    def let_through(data, max_pixels):
        return probe(data, max_pixels) or (Encoded(data, 320, 240) if data[:2] == b"\xff\xd8" else None)

    monkeypatch.setattr(loader, "probe_jpeg", let_through)

    def refuse_all(self, items):
        done = real(self, [])
        done.failed = list(range(len(items)))
        return done

    monkeypatch.setattr(device_batches.DeviceDecoder, "__call__", refuse_all)
    cpu_out, dev_out = tmp_path / "cpu", tmp_path / "dev"
    run_extract(tiny_config(cpu_out, images=str(folder), decode="cpu"))
    stats = run_extract(tiny_config(dev_out, images=str(folder), decode="gpu", batch_size=3))
    a, b = rows(cpu_out), rows(dev_out)
    assert list(a.index) == list(b.index) and stats.failures == 1
    assert list(a["phash"]) == list(b["phash"])  # all on the CPU path: the very same pHashes
    np.testing.assert_allclose(np.stack(a["cls"].to_numpy()), np.stack(b["cls"].to_numpy()), atol=1e-3)
    assert list(failures(dev_out)["key"]) == ["broken.jpg"]
    assert list(failures(dev_out)["reason"]) == list(failures(cpu_out)["reason"])


def test_decode_is_resolved_from_the_device_and_the_resize(tmp_path, monkeypatch, caplog):
    cfg = tiny_config(tmp_path, images="x")
    backbone = create_backbone(cfg, torch.device("cpu"))
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_decode(cfg, cpu, backbone.preprocess) == ("cpu", "auto: the loader's workers decode (the model "
                                                                    "runs on cpu)")
    assert resolve_decode(tiny_config(tmp_path, images="x", decode="cpu"), cpu, backbone.preprocess)[0] == "cpu"
    with caplog.at_level(logging.WARNING):
        assert resolve_decode(tiny_config(tmp_path, images="x", decode="gpu"), cpu, backbone.preprocess) == \
            ("device", "--decode gpu")
    assert "a check of the path, not a speed-up" in caplog.text
    monkeypatch.setattr(device_batches, "device_decodes_jpeg", lambda device: device.type == "cuda")
    assert resolve_decode(cfg, cuda, backbone.preprocess) == ("device", "auto: JPEGs decoded by nvJPEG on the GPU "
                                                                        "in batches")
    monkeypatch.setattr(device_batches, "device_decodes_jpeg", lambda device: False)
    assert resolve_decode(cfg, cuda, backbone.preprocess)[1] == "auto: this torchvision has no nvJPEG decoder"
    with pytest.raises(ConfigError, match="cannot decode JPEGs on cpu"):
        resolve_decode(tiny_config(tmp_path, images="x", decode="gpu"), cpu, backbone.preprocess)
    dynamic = tiny_config(tmp_path, images="x", resize_mode="dynamic")
    dyn = create_backbone(dynamic, cpu)
    assert resolve_decode(dynamic, cuda, dyn.preprocess)[1].startswith("auto: dynamic resolution")
    with pytest.raises(ConfigError, match="--resize-mode dynamic"):
        resolve_decode(tiny_config(tmp_path, images="x", resize_mode="dynamic", decode="gpu"), cpu, dyn.preprocess)
    with pytest.raises(ConfigError, match="decode must be one of auto, cpu, gpu"):
        tiny_config(tmp_path, images="x", decode="nvjpeg")


def test_the_real_decoder_check_on_the_cpu():
    device_batches.device_decodes_jpeg.cache_clear()
    assert device_batches.device_decodes_jpeg(torch.device("cpu")) is True
