"""Image bytes → RGB (pipeline/io/decode.py): EXIF orientation, modes, JPEG draft, errors, pixel limit."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps

from pipeline.io import decode as decode_module
from pipeline.io.decode import Decoded, SampleError, decode_image, to_rgb
from tests.conftest import jpeg_bytes, make_image

BIG = 10**8


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def with_orientation(img: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(img, "JPEG", quality=95, exif=exif)


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img)


# --------------------------------------------------------------------------- plain decoding


def test_jpeg_decodes_to_rgb_with_its_size():
    data = jpeg_bytes(make_image(3, (64, 48)))
    got = decode_image(data, BIG)
    assert isinstance(got, Decoded)
    assert got.image.mode == "RGB" and got.image.size == (64, 48)
    assert (got.width, got.height) == (64, 48)
    assert np.array_equal(pixels(got.image), pixels(Image.open(io.BytesIO(data)).convert("RGB")))


def test_png_decodes_losslessly():
    img = make_image(5, (33, 17))
    got = decode_image(encode(img, "PNG"), BIG)
    assert (got.width, got.height) == (33, 17)
    assert np.array_equal(pixels(got.image), pixels(img))


# --------------------------------------------------------------------------- EXIF orientation


@pytest.mark.parametrize("orientation, swapped", [(1, False), (3, False), (6, True), (8, True)])
def test_exif_orientation(orientation, swapped):
    img = make_image(7, (80, 40))
    data = with_orientation(img, orientation)
    got = decode_image(data, BIG)
    assert (got.width, got.height) == ((40, 80) if swapped else (80, 40))
    assert got.image.size == (got.width, got.height) and got.image.mode == "RGB"
    expected = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    assert np.array_equal(pixels(got.image), pixels(expected))


def test_orientations_6_and_8_rotate_opposite_ways():
    img = make_image(8, (80, 40))
    six = pixels(decode_image(with_orientation(img, 6), BIG).image).astype(int)
    eight = pixels(decode_image(with_orientation(img, 8), BIG).image).astype(int)
    upright = pixels(decode_image(with_orientation(img, 1), BIG).image).astype(int)
    # 6: rotate 90° clockwise to view; 8: counter-clockwise. Same JPEG data, so equal up to the rotation.
    assert np.array_equal(six, np.rot90(upright, k=-1))
    assert np.array_equal(eight, np.rot90(upright, k=1))


# --------------------------------------------------------------------------- modes through decode_image


def palette_image(transparent: bool) -> Image.Image:
    img = Image.new("P", (3, 1))
    img.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255])
    img.putdata([0, 1, 2])
    if transparent:
        img.info["transparency"] = 1
    return img


def build(mode: str) -> tuple[Image.Image, list]:
    """(image in `mode`, expected RGB pixels of its single row)."""
    if mode == "L":
        img = Image.new("L", (3, 1))
        img.putdata([0, 77, 255])
        return img, [[0, 0, 0], [77, 77, 77], [255, 255, 255]]
    if mode == "P":
        return palette_image(False), [[255, 0, 0], [0, 255, 0], [0, 0, 255]]
    if mode == "P-transparent":
        return palette_image(True), [[255, 0, 0], [255, 255, 255], [0, 0, 255]]
    if mode == "RGBA":
        img = Image.new("RGBA", (4, 1))
        img.putdata([(10, 20, 30, 255), (0, 0, 0, 0), (200, 100, 50, 0), (0, 0, 0, 128)])
        # composited on white: out = c * a + 255 * (1 - a)
        return img, [[10, 20, 30], [255, 255, 255], [255, 255, 255], [127, 127, 127]]
    if mode == "LA":
        img = Image.new("LA", (3, 1))
        img.putdata([(100, 255), (100, 0), (0, 128)])
        return img, [[100, 100, 100], [255, 255, 255], [127, 127, 127]]
    if mode == "CMYK":
        img = Image.new("CMYK", (3, 1))
        img.putdata([(0, 0, 0, 0), (255, 0, 0, 0), (0, 0, 0, 255)])
        return img, [[255, 255, 255], [0, 255, 255], [0, 0, 0]]
    if mode == "1":
        img = Image.new("1", (2, 1))
        img.putdata([0, 255])
        return img, [[0, 0, 0], [255, 255, 255]]
    if mode == "I;16":
        img = Image.fromarray(np.array([[0, 65535, 32768, 257]], dtype=np.uint16))
        assert img.mode == "I;16"
        return img, [[0] * 3, [255] * 3, [128] * 3, [1] * 3]
    if mode == "I":
        img = Image.fromarray(np.array([[0, 65535, 70000, -5, 13107]], dtype=np.int32))
        assert img.mode == "I"
        return img, [[0] * 3, [255] * 3, [255] * 3, [0] * 3, [51] * 3]
    if mode == "I-8bit-range":
        img = Image.fromarray(np.array([[0, 100, 255]], dtype=np.int32))
        return img, [[0] * 3, [100] * 3, [255] * 3]
    if mode == "F":
        img = Image.fromarray(np.array([[0.0, 127.6, 255.0, -3.0]], dtype=np.float32))
        assert img.mode == "F"
        return img, [[0] * 3, [128] * 3, [255] * 3, [0] * 3]
    raise AssertionError(mode)


# (mode, file format that keeps it)
ENCODED_MODES = [("L", "PNG"), ("P", "PNG"), ("P-transparent", "PNG"), ("RGBA", "PNG"), ("LA", "PNG"),
                 ("CMYK", "TIFF"), ("1", "PNG"), ("I;16", "PNG"), ("I", "TIFF"), ("F", "TIFF")]


@pytest.mark.parametrize("mode, fmt", ENCODED_MODES)
def test_decode_any_mode_to_rgb(mode, fmt):
    img, expected = build(mode)
    data = encode(img, fmt, **({"transparency": 1} if mode == "P-transparent" else {}))
    stored = Image.open(io.BytesIO(data))
    assert stored.mode == mode.split("-")[0]  # the file really holds that mode
    got = decode_image(data, BIG)
    assert got.image.mode == "RGB"
    assert (got.width, got.height) == img.size
    assert pixels(got.image).tolist() == [expected]


def test_cmyk_jpeg_decodes_to_rgb():
    img = Image.new("CMYK", (16, 16), (0, 0, 0, 0))
    data = encode(img, "JPEG", quality=95)
    got = decode_image(data, BIG)
    assert got.image.mode == "RGB" and got.image.size == (16, 16)
    assert np.abs(pixels(got.image).astype(int) - 255).max() <= 3  # blank CMYK is white


def test_dark_16_bit_png_keeps_its_brightness():
    # Two 16-bit images that differ in one value by 1 must not decode wildly differently.
    dark = np.array([[0, 128, 255]], dtype=np.uint16)
    got = decode_image(encode(Image.fromarray(dark), "PNG"), BIG)
    assert pixels(got.image)[..., 0].tolist() == [[0, 0, 1]]  # round(v * 255 / 65535)


# --------------------------------------------------------------------------- to_rgb directly


@pytest.mark.parametrize("mode", ["L", "P", "P-transparent", "RGBA", "LA", "CMYK", "1", "I;16", "I",
                                  "I-8bit-range", "F"])
def test_to_rgb(mode):
    img, expected = build(mode)
    got = to_rgb(img)
    assert got.mode == "RGB" and got.size == img.size
    assert pixels(got).tolist() == [expected]


def test_to_rgb_brute_force_alpha_compositing():
    rng = np.random.default_rng(4)
    arr = rng.integers(0, 256, (9, 11, 4), dtype=np.uint8)
    arr[0, 0, 3], arr[0, 1, 3] = 0, 255
    got = pixels(to_rgb(Image.fromarray(arr, "RGBA"))).astype(int)
    a = arr[..., 3:4] / 255.0
    expected = arr[..., :3] * a + 255 * (1 - a)
    assert np.abs(got - expected).max() <= 1
    assert got[0, 0].tolist() == [255, 255, 255] and got[0, 1].tolist() == arr[0, 1, :3].tolist()


def test_to_rgb_keeps_an_rgb_image():
    img = make_image(1)
    assert to_rgb(img) is img


# --------------------------------------------------------------------------- JPEG draft


def big_jpeg(size=(2000, 1500)) -> bytes:
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (w + h)], axis=-1).astype(np.uint8)
    return encode(Image.fromarray(arr), "JPEG", quality=85)


@pytest.fixture(scope="module")
def jpeg_2000x1500() -> bytes:
    return big_jpeg()


def test_jpeg_draft_reduces_but_not_below_the_target(jpeg_2000x1500):
    got = decode_image(jpeg_2000x1500, BIG, target=lambda w, h: (200, 150))
    assert (got.width, got.height) == (2000, 1500)
    w, h = got.image.size
    assert got.image.mode == "RGB"
    assert (w, h) != (2000, 1500) and w < 2000 and h < 1500
    assert w >= 200 and h >= 150
    assert w < 2 * 200 or h < 2 * 150  # reduced as far as the target allows (DCT scaling 1/8)


def test_jpeg_draft_off_or_without_target_is_full_size(jpeg_2000x1500):
    assert decode_image(jpeg_2000x1500, BIG, target=lambda w, h: (200, 150), draft=False).image.size == (2000, 1500)
    assert decode_image(jpeg_2000x1500, BIG).image.size == (2000, 1500)


def test_jpeg_draft_needs_twice_the_target(jpeg_2000x1500):
    # 2000 < 2 * 1200: no reduction
    assert decode_image(jpeg_2000x1500, BIG, target=lambda w, h: (1200, 900)).image.size == (2000, 1500)


def test_target_gets_the_oriented_size(jpeg_2000x1500):
    seen = []
    data = with_orientation(Image.open(io.BytesIO(jpeg_2000x1500)), 6)

    def target(w, h):
        seen.append((w, h))
        return (500, 200)

    got = decode_image(data, BIG, target=target)
    assert seen == [(1500, 2000)]
    assert (got.width, got.height) == (1500, 2000)
    w, h = got.image.size
    assert w >= 500 and h >= 200  # the target is in oriented coordinates
    assert w < 1500 and h < 2000


def test_draft_with_exif_rotation_keeps_the_target():
    # Stored 2000x1000, shown 1000x2000. An asymmetric target (500 wide, 200 high on screen) must be met
    # in the oriented image; mixing up the axes would scale the stored width by 4 and leave 250 < 500.
    img = Image.open(io.BytesIO(big_jpeg((2000, 1000))))
    got = decode_image(with_orientation(img, 6), BIG, target=lambda w, h: (500, 200))
    assert (got.width, got.height) == (1000, 2000)
    w, h = got.image.size
    assert w >= 500 and h >= 200
    assert (w, h) != (1000, 2000)


def test_png_is_never_drafted():
    data = encode(Image.new("RGB", (800, 600), (1, 2, 3)), "PNG")
    assert decode_image(data, BIG, target=lambda w, h: (50, 50)).image.size == (800, 600)


# --------------------------------------------------------------------------- errors


def test_zero_bytes_is_an_empty_image():
    with pytest.raises(SampleError) as info:
        decode_image(b"", BIG)
    assert (info.value.stage, info.value.reason) == ("decode", "EmptyImage")


def test_non_image_bytes():
    with pytest.raises(SampleError) as info:
        decode_image(b"definitely not an image, just some text" * 5, BIG)
    err = info.value
    assert (err.stage, err.reason) == ("decode", "UnidentifiedImageError")
    assert "0x7f" not in err.detail and not re.search(r"0x[0-9a-fA-F]{6,}", err.detail)
    assert "BytesIO" not in err.detail and not re.search(r"0x[0-9a-fA-F]{6,}", str(err))


def test_truncated_jpeg():
    data = jpeg_bytes(make_image(2, (256, 256)))
    with pytest.raises(SampleError) as info:
        decode_image(data[: len(data) // 2], BIG)
    assert info.value.stage == "decode"
    assert info.value.reason == "OSError" and "truncated" in info.value.detail


def test_sample_error_detail_is_capped():
    err = SampleError("decode", "X", "y" * 2000)
    assert err.detail == "y" * 500 and str(err).startswith("decode: X: yyy")


@pytest.fixture
def no_decoding(monkeypatch):
    """Any pixel decoding fails the test (AssertionError is not a data error, so it propagates)."""

    def load(*_args, **_kwargs):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    monkeypatch.setattr(decode_module.simplejpeg, "decode_jpeg", load)  # the fast JPEG path's decoder


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_over_max_pixels_is_refused_without_decoding(fmt, no_decoding):
    img = make_image(0, (64, 48))
    data = encode(img, fmt)
    with pytest.raises(AssertionError, match="pixels were decoded"):  # the guard works
        decode_image(data, BIG)
    for limit in (64 * 48 - 1, 1000, 10):  # just over, over twice (Pillow's own error), far over
        with pytest.raises(SampleError) as info:
            decode_image(data, limit)
        assert (info.value.stage, info.value.reason) == ("decode", "DecompressionBombError")


def test_max_pixels_holds_without_pillows_own_check(monkeypatch, no_decoding):
    # decode_image's own size check, for when Pillow's (a backup here) does not run
    monkeypatch.setattr(Image, "_decompression_bomb_check", lambda size: None)
    with pytest.raises(SampleError) as info:
        decode_image(jpeg_bytes(make_image(0, (64, 48))), 64 * 48 - 1)
    assert (info.value.stage, info.value.reason) == ("decode", "DecompressionBombError")
    assert "64x48" in info.value.detail


def test_exactly_max_pixels_is_allowed():
    got = decode_image(jpeg_bytes(make_image(0, (64, 48))), 64 * 48)
    assert got.image.size == (64, 48)


# --------------------------------------------------------------------------- fast JPEG path (simplejpeg)


def photo_jpeg(size: tuple[int, int], seed: int = 0, quality: int = 88, subsampling: int = 2) -> bytes:
    """A smooth photo-like JPEG (4:2:0 by default: chroma upsampling is where decoders could differ)."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (9, 13, 3), dtype=np.uint8))
    img = small.resize(size, Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, subsampling=subsampling)
    return buf.getvalue()


@pytest.mark.parametrize("size,target,subsampling", [
    ((512, 341), (384, 256), 2),  # no draft (341 < 2 · 256)
    ((1000, 667), (384, 256), 2),  # draft 1/2
    ((2000, 1333), (384, 256), 0),  # draft 1/4, 4:4:4
    ((2000, 1500), (200, 150), 1),  # draft 1/8, 4:2:2
    ((333, 517), None, 2),  # odd sizes, no target
])
def test_fast_path_gives_pillows_pixels_bit_for_bit(size, target, subsampling):
    data = photo_jpeg(size, seed=sum(size), subsampling=subsampling)
    fn = None if target is None else (lambda w, h: target)
    fast = decode_image(data, BIG, target=fn)
    slow = decode_image(data, BIG, target=fn, fast=False)
    assert fast.pixels.shape[2] == 4 and slow.pixels.shape[2] == 3  # the fast path was taken, and not taken
    assert fast.size == slow.size == slow.image.size
    assert np.array_equal(fast.pixels[..., :3], slow.pixels)
    assert np.array_equal(np.asarray(fast.image), slow.pixels) and fast.image.mode == "RGB"
    assert fast.view.mode == "RGBX"
    assert (fast.width, fast.height) == (slow.width, slow.height) == size
    assert not fast.pixels.flags.writeable


def test_fast_path_view_shares_the_decoded_memory():
    got = decode_image(photo_jpeg((64, 48)), BIG)
    view = got.view
    assert view.mode == "RGBX" and view.size == (64, 48) and view.readonly
    assert view.getpixel((5, 7))[:3] == tuple(got.pixels[7, 5, :3])


def test_draft_scale_is_pillows_choice():
    from pipeline.io.decode import draft_scale

    for size, need in [((2000, 1500), (200, 150)), ((1000, 667), (384, 256)), ((512, 341), (384, 256)),
                       ((4000, 300), (100, 100)), ((1600, 1600), (199, 401))]:
        img = Image.open(io.BytesIO(photo_jpeg(size)))
        img.draft("RGB", need)
        scale = draft_scale(size, need)
        assert img.size == (-(-size[0] // scale), -(-size[1] // scale)), (size, need)
    assert draft_scale((100, 100), None) == 1


def test_orientated_cmyk_grey_and_damaged_jpegs_take_pillows_path(jpeg_2000x1500):
    rotated = decode_image(with_orientation(Image.open(io.BytesIO(jpeg_2000x1500)), 6), BIG,
                           target=lambda w, h: (500, 200))
    assert rotated.pixels.shape[2] == 3 and rotated.size[1] > rotated.size[0]
    cmyk = encode(Image.new("CMYK", (40, 30), (10, 20, 30, 40)), "JPEG")
    grey = encode(Image.new("L", (40, 30), 77), "JPEG")
    for data in (cmyk, grey):
        got = decode_image(data, BIG)
        assert got.pixels.shape == (30, 40, 3) and got.image.mode == "RGB"
    assert tuple(decode_image(grey, BIG).pixels[3, 3]) == (77, 77, 77)
    data = photo_jpeg((128, 96))
    trailing = data[:-2] + b"\x00" * 64 + data[-2:]  # junk before the end marker: libjpeg-turbo warns
    got = decode_image(trailing, BIG)  # strict simplejpeg refuses; Pillow decodes it, as before
    assert got.pixels.shape == (96, 128, 3)
    assert np.array_equal(got.pixels, decode_image(trailing, BIG, fast=False).pixels)


def test_truncated_jpeg_fails_on_the_fast_path_too():
    data = photo_jpeg((256, 256))
    assert decode_image(data, BIG).pixels.shape[2] == 4
    with pytest.raises(SampleError) as info:
        decode_image(data[: len(data) // 2], BIG)
    assert (info.value.stage, info.value.reason) == ("decode", "OSError") and "truncated" in info.value.detail
