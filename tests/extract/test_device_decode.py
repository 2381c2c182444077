"""Device JPEG decode (pipeline/extract/device_decode.py, device_phash.py) against the CPU path, run on CPU tensors."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.v2 as T2
import torchvision.transforms.v2.functional as TF
from PIL import Image

from pipeline.extract import device_phash
from pipeline.extract.device_decode import DeviceDecoder, Encoded, orient, probe_jpeg
from pipeline.extract.loader import ExtractDataset
from pipeline.extract.preprocess import Preprocess
from pipeline.io import phash as phash_mod
from pipeline.io.phash import FAST_REDUCING_GAP, phash64_orientations

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
CPU = torch.device("cpu")
MAX_PIXELS = 10**9

# Measured against the CPU path's model input (224 px, crop 0.875) on the shared photos and on the seeded ones
# made here (docs/PERFORMANCE.md, device decode). Without JPEG draft both sides decode the same pixels: only the
# resize's rounding differs.
NO_DRAFT = {"max": 2, "mean": 0.01, "p999": 1}
# With draft the CPU decodes at 1/2..1/8 scale in the DCT domain and the device box-reduces a full decode by the
# same factor: hard edges differ by a few dozen levels, a pixel in a thousand by more than 3 (the CPU path's own
# draft moves its pixels several times further from a full decode: up to 114 levels, p99.9 21).
DRAFT = {"max": 26, "mean": 0.05, "p999": 3}
# The seeded photos (noise and hard-edged blocks) are harder on the draft than real photos, above all at 1/2
# scale, where libjpeg makes the chroma at its own resolution and the box averages the upsampled chroma.
SEEDED_DRAFT = {"max": 47, "mean": 0.21, "p999": 11}
# One seeded photo drafted at 1/2, turned: the worst case of the seeded ones.
ONE_PHOTO_DRAFT = {"max": 30, "mean": 0.45, "p999": 13}
PHASH_MAX_BITS = 2


def preprocess(size: int = 224, crop_pct: float = 1.0, resize_mode: str = "fixed") -> Preprocess:
    return Preprocess(input_size=(3, size, size), interpolation="bicubic", mean=(0.5,) * 3, std=(0.5,) * 3,
                      crop_pct=crop_pct, crop_mode="center", resize_mode=resize_mode)


def photo(seed: int, size: tuple[int, int]) -> Image.Image:
    """Seeded photo-like image: smooth colour fields, a few hard edges and fine noise."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = Image.fromarray(rng.integers(0, 256, (9, 12, 3), dtype=np.uint8)).resize(size, Image.Resampling.BICUBIC)
    arr = np.asarray(base, dtype=np.float64) + rng.normal(0, 6, (h, w, 3))
    for _ in range(4):
        x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
        arr[y0:y0 + h // 3, x0:x0 + w // 4] = rng.integers(0, 256, 3)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def encode(img: Image.Image, orientation: int | None = None, **kwargs) -> bytes:
    buf = io.BytesIO()
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif
    img.save(buf, format="JPEG", quality=kwargs.pop("quality", 90), **kwargs)
    return buf.getvalue()


def compare(datas: list[bytes], pre: Preprocess, draft: bool, decoder: DeviceDecoder | None = None) -> dict:
    """|device - CPU path| over all model-input pixels, and pHash bit differences, for these JPEGs."""
    dataset = ExtractDataset([], pre, 4, MAX_PIXELS, jpeg_draft=draft)
    decoder = decoder or DeviceDecoder(pre, CPU, target=dataset.decode_target, draft=draft)
    items = [probe_jpeg(d, MAX_PIXELS) for d in datas]
    assert all(items), "the test images are all baseline JPEGs"
    out = decoder(items)
    assert out.ok == list(range(len(datas))) and out.failed == []
    diffs, bits = [], []
    for row, data in enumerate(datas):
        tensor, meta = dataset.process("s", row, "k", data)
        diffs.append((out.images[row].int() - tensor.int()).abs().flatten().numpy())
        cpu = np.array([meta.phash, meta.phash_mirror, meta.phash_flip, meta.phash_rot180], dtype=np.uint64)
        bits.append(device_phash.hamming(out.phashes[row], cpu))
    d = np.concatenate(diffs).astype(np.float64)
    return {"max": d.max(), "mean": d.mean(), "p999": np.percentile(d, 99.9), "bits": np.concatenate(bits)}


def within(figures: dict, bound: dict) -> bool:
    return all(figures[k] <= bound[k] for k in ("max", "mean", "p999"))


def seeded_jpegs() -> list[bytes]:
    """Photo sizes that the CPU path drafts at 1 (none), 2, 4 and 8; 4:2:0, 4:2:2 and 4:4:4; grey; turned."""
    sizes = [(300, 200), (640, 480), (1100, 700), (2200, 1500), (500, 900), (4032, 3024)]
    datas = [encode(photo(i, size), quality=88 + i) for i, size in enumerate(sizes)]
    datas.append(encode(photo(7, (1300, 900)), subsampling=0))
    datas.append(encode(photo(8, (900, 1300)), subsampling=1))
    datas.append(encode(photo(9, (1200, 800)).convert("L")))
    datas.append(encode(photo(10, (1500, 1100)), 6))
    return datas


def shared_jpegs(count: int = 120) -> list[bytes]:
    if not SHARED.is_dir():
        pytest.skip("../shared/data is absent")
    files = sorted((SHARED / "pimmi_copydays_like" / "dataset1").glob("*.jpg"))[:count]
    files += sorted((SHARED / "unsplash_coenm").glob("*.jpg"))
    files += sorted((SHARED / "pdq_threatexchange").rglob("*.jpg"))
    datas = [f.read_bytes() for f in files]
    return [d for d in datas if probe_jpeg(d, MAX_PIXELS) is not None]


# --- probe_jpeg -------------------------------------------------------------------------------------------------

def test_probe_reads_a_baseline_jpeg_without_decoding_it():
    data = encode(photo(1, (120, 80)))
    item = probe_jpeg(data, MAX_PIXELS)
    assert item == Encoded(data, 120, 80, 1)


def test_probe_reads_greyscale_and_swaps_the_sides_of_a_turned_jpeg():
    grey = probe_jpeg(encode(photo(2, (90, 60)).convert("L")), MAX_PIXELS)
    assert (grey.width, grey.height, grey.orientation) == (90, 60, 1)
    for orientation, size in [(3, (90, 60)), (6, (60, 90)), (8, (60, 90)), (5, (60, 90))]:
        item = probe_jpeg(encode(photo(2, (90, 60)), orientation), MAX_PIXELS)
        assert (item.width, item.height, item.orientation) == (*size, orientation)
        assert item.stored_size == (90, 60)
    assert probe_jpeg(encode(photo(2, (90, 60)), 0), MAX_PIXELS).orientation == 1  # out of range: upright


def test_probe_refuses_what_the_device_should_not_decode():
    img = photo(3, (96, 64))
    good = encode(img)
    sof = good.index(b"\xff\xc0")
    cases = {
        "progressive": encode(img, progressive=True),
        "cmyk": encode(Image.new("CMYK", (96, 64), (10, 20, 30, 40))),
        "png": _png(img),
        "truncated": good[: len(good) // 2],
        "no end marker": good[:-2],
        "arithmetic": good[:sof + 1] + b"\xc9" + good[sof + 2:],
        "12-bit": good[:sof + 4] + b"\x0c" + good[sof + 5:],
        "garbage": b"\xff\xd8\xff\xe0garbage",
        "empty": b"",
        "text": b"not an image at all",
    }
    for name, data in cases.items():
        assert probe_jpeg(data, MAX_PIXELS) is None, name
    assert probe_jpeg(good, 96 * 64) is not None
    assert probe_jpeg(good, 96 * 64 - 1) is None  # over max_pixels (a bomb)


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# --- batches and fallback ---------------------------------------------------------------------------------------

def test_a_damaged_jpeg_in_a_batch_fails_alone():
    pre = preprocess(56)
    datas = [encode(photo(i, (200 + 10 * i, 150))) for i in range(3)]
    damaged = Encoded(datas[1][: len(datas[1]) // 2], 210, 150, 1)
    wrong_size = Encoded(datas[2], 999, 150, 1)  # a header that lies: its pixels are not used
    items = [probe_jpeg(datas[0], MAX_PIXELS), damaged, probe_jpeg(datas[2], MAX_PIXELS), wrong_size]
    out = DeviceDecoder(pre, CPU)(items)
    assert out.ok == [0, 2] and out.failed == [1, 3]
    assert out.images.shape == (2, 3, 56, 56) and out.images.dtype == torch.uint8 and out.phashes.shape == (2, 4)
    alone = DeviceDecoder(pre, CPU)([items[2]])
    assert torch.equal(out.images[1], alone.images[0]) and np.array_equal(out.phashes[1], alone.phashes[0])


def test_a_batch_split_by_its_pixel_budget_gives_the_same_rows():
    pre = preprocess(56)
    items = [probe_jpeg(encode(photo(i, (160, 120))), MAX_PIXELS) for i in range(5)]
    whole = DeviceDecoder(pre, CPU)(items)
    split = DeviceDecoder(pre, CPU, max_batch_pixels=2 * 160 * 120)(items)
    assert split.ok == whole.ok == list(range(5))
    assert torch.equal(split.images, whole.images) and np.array_equal(split.phashes, whole.phashes)


def test_an_empty_batch_and_an_all_failed_batch():
    out = DeviceDecoder(preprocess(56), CPU)([Encoded(b"\xff\xd8junk\xff\xd9", 10, 10, 1)])
    assert out.images is None and out.ok == [] and out.failed == [0] and out.phashes.shape == (0, 4)
    assert DeviceDecoder(preprocess(56), CPU)([]).phashes.shape == (0, 4)


def test_no_tensor_resize_is_a_value_error():
    with pytest.raises(ValueError):
        DeviceDecoder(preprocess(56, resize_mode="dynamic"), CPU)
    with pytest.raises(ValueError):
        preprocess(56, resize_mode="dynamic").tensor(torch.zeros(3, 8, 8, dtype=torch.uint8))


# --- pixels against the CPU path --------------------------------------------------------------------------------

@pytest.mark.parametrize("draft", [False, True])
@pytest.mark.parametrize("crop_pct", [1.0, 0.875])
def test_seeded_photos_match_the_cpu_path(draft, crop_pct):
    figures = compare(seeded_jpegs(), preprocess(224, crop_pct), draft)
    assert within(figures, SEEDED_DRAFT if draft else NO_DRAFT), figures
    assert figures["bits"].max() <= PHASH_MAX_BITS, figures["bits"]


@pytest.mark.slow
@pytest.mark.parametrize("draft", [False, True])
def test_shared_photos_match_the_cpu_path(draft):
    figures = compare(shared_jpegs(), preprocess(224, 0.875), draft)
    assert within(figures, DRAFT if draft else NO_DRAFT), figures
    assert figures["bits"].max() <= PHASH_MAX_BITS and figures["bits"].mean() < 0.2, figures["bits"]


@pytest.mark.parametrize("draft", [False, True])
def test_the_bounds_catch_a_crop_one_pixel_off(draft):
    """The pixel bounds are tight enough that a crop shifted by one pixel fails them."""
    pre = preprocess(224, 0.875)
    dataset = ExtractDataset([], pre, 4, MAX_PIXELS, jpeg_draft=draft)
    shifted = DeviceDecoder(pre, CPU, target=dataset.decode_target, draft=draft)
    resize, crop = pre._tensor_steps
    shifted_pre = preprocess(224, 0.875)

    def off_by_one(x: torch.Tensor) -> torch.Tensor:
        top, left = (x.shape[-2] - 224) // 2, (x.shape[-1] - 224) // 2
        return TF.crop(x, top, left + 1, 224, 224)

    object.__setattr__(shifted_pre, "_tensor_steps", [resize, T2.Lambda(off_by_one)])
    shifted.preprocess = shifted_pre
    figures = compare(seeded_jpegs(), pre, draft, decoder=shifted)
    assert not within(figures, SEEDED_DRAFT if draft else NO_DRAFT), figures
    assert all(figures[k] > (SEEDED_DRAFT if draft else NO_DRAFT)[k] for k in ("mean", "p999")), figures


@pytest.mark.parametrize("draft", [False, True])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_turns_as_the_cpu_path(orientation, draft):
    data = encode(photo(10 + orientation, (1100, 700)), orientation)
    figures = compare([data], preprocess(224, 0.875), draft=draft)
    assert within(figures, ONE_PHOTO_DRAFT if draft else NO_DRAFT), figures
    assert figures["bits"].max() <= PHASH_MAX_BITS


def test_orient_is_pils_exif_transpose():
    arr = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    turns = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
             5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
             8: Image.Transpose.ROTATE_90}
    x = torch.from_numpy(arr).permute(2, 0, 1)
    assert torch.equal(orient(x, 1), x)
    for o, turn in turns.items():
        expected = np.asarray(Image.fromarray(arr).transpose(turn))
        assert np.array_equal(orient(x, o).permute(1, 2, 0).numpy(), expected), o


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_the_shared_exif_rotation_photos_match_the_cpu_path(orientation):
    path = SHARED / "pdq_threatexchange" / "reg-test-input" / "exif-rotn" / f"exif-rotn-{orientation}.jpg"
    if not path.is_file():
        pytest.skip("../shared/data is absent")
    data = path.read_bytes()
    item = probe_jpeg(data, MAX_PIXELS)
    assert item.orientation == orientation and (item.width > item.height) == (orientation in (1, 3))
    assert within(compare([data], preprocess(224, 0.875), draft=False), NO_DRAFT)
    # drafted at 1/8, where libjpeg's DCT scaling is a block mean: close to the box, with a slight bias
    assert within(compare([data], preprocess(224, 0.875), draft=True), {"max": 3, "mean": 0.2, "p999": 2})


# --- pHash ------------------------------------------------------------------------------------------------------

def gradient(size: tuple[int, int]) -> np.ndarray:
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    return np.clip(np.stack([x / w * 255, y / h * 255, (x + y) / (w + h) * 200 + 20], -1), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("size", [(32, 32), (40, 30), (512, 341), (1000, 1000), (1600, 1004)])
def test_device_phashes_are_io_phash_on_the_same_pixels(size):
    """The same pixels hash the same: Pillow's grey 32×32 image to the level, the four hashes equal."""
    arrays = [gradient(size), np.asarray(photo(5, size))]
    greys = []
    for arr in arrays:
        img = Image.fromarray(arr)
        grey = device_phash.grey32(torch.from_numpy(arr.copy()).permute(2, 0, 1))
        pil = np.asarray(phash_mod._grey32(img, FAST_REDUCING_GAP), dtype=np.float64)
        assert np.array_equal(grey.numpy(), pil)
        greys.append(grey)
    hashes = device_phash.phash_orientations(torch.stack(greys))
    assert hashes.dtype == np.uint64
    for arr, row in zip(arrays, hashes):
        assert tuple(int(h) for h in row) == phash64_orientations(Image.fromarray(arr), FAST_REDUCING_GAP)


def test_a_flat_image_hashes_as_io_phash():
    flat = np.full((300, 200, 3), 128, dtype=np.uint8)
    hashes = device_phash.phash_orientations(device_phash.grey32(torch.from_numpy(flat).permute(2, 0, 1))[None])
    assert tuple(int(h) for h in hashes[0]) == phash64_orientations(Image.fromarray(flat), FAST_REDUCING_GAP)


def test_lanczos_weights_resize_as_pillow():
    rng = np.random.default_rng(7)
    arr = rng.integers(0, 256, (45, 77), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(arr).resize((32, 32), Image.Resampling.LANCZOS, box=(0, 0, 76.5, 45)))
    h = device_phash.lanczos_weights(77, 32, 76.5)
    v = device_phash.lanczos_weights(45, 32, 45.0)
    x = device_phash._fixed_point(torch.from_numpy(arr.astype(np.float64)) @ torch.from_numpy(h).T)
    x = device_phash._fixed_point(torch.from_numpy(v) @ x)
    assert np.array_equal(x.numpy(), expected)


def test_hamming_against_brute_force():
    rng = np.random.default_rng(3)
    a, b = (rng.integers(0, 2**63, 50, dtype=np.int64).astype(np.uint64) * np.uint64(2) for _ in range(2))
    assert device_phash.hamming(a, b).tolist() == [bin(int(x) ^ int(y)).count("1") for x, y in zip(a, b)]
