"""64-bit DCT pHash (pipeline/io/phash.py) against imagehash, and its Hamming distance."""

from __future__ import annotations

import io

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageOps

from pipeline.io import phash as phash_mod
from pipeline.io.phash import hamming64, phash64
from tests.conftest import make_image


def reference(img: Image.Image) -> int:
    return int(str(imagehash.phash(img)), 16)


def smooth_image(seed: int, size: tuple[int, int] = (160, 120)) -> Image.Image:
    """Seeded low-frequency RGB image: a random 6x8 grid upsampled (photo-like, unlike pure noise)."""
    rng = np.random.default_rng(1000 + seed)
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)


def random_images() -> list[Image.Image]:
    rng = np.random.default_rng(2024)
    out = []
    for i in range(20):
        w, h = (int(v) for v in rng.integers(9, 320, 2))
        if i % 3 == 0:
            out.append(smooth_image(i, (w, h)))
        elif i % 3 == 1:
            out.append(make_image(i, (w, h), seed=3))
        else:
            mode = ["L", "RGBA", "RGB"][i % 7 % 3]
            chans = {"L": 1, "RGBA": 4, "RGB": 3}[mode]
            arr = rng.integers(0, 256, (h, w, chans), dtype=np.uint8)
            out.append(Image.fromarray(arr[..., 0] if chans == 1 else arr, mode))
    return out


def gradients() -> dict[str, Image.Image]:
    h, w = 120, 160
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    grey = lambda a: np.repeat(a[..., None], 3, axis=2)  # noqa: E731
    arrays = {
        "diagonal": grey((x + y) / (w + h) * 255),
        "channels-in-three-directions": np.stack([x / w * 255, y / h * 255, (x + y) / (w + h) * 255], -1),
        "off-centre-blob": grey(255 * np.exp(-((x - 50) ** 2 + (y - 30) ** 2) / (2 * 40**2))),
        "quadratic": grey(255 * (0.6 * (x / w) ** 2 + 0.3 * (y / h) + 0.1 * x * y / (w * h))),
    }
    return {k: Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)) for k, a in arrays.items()}


def reencode(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def test_matches_imagehash_on_random_images():
    images = random_images()
    assert len({im.size for im in images}) > 10  # many sizes, including odd and tiny ones
    for im in images:
        assert phash64(im) == reference(im), im.size


@pytest.mark.parametrize("name", list(gradients()))
def test_matches_imagehash_on_smooth_gradients(name):
    img = gradients()[name]
    assert phash64(img) == reference(img)


def test_matches_imagehash_on_flat_and_one_dimensional_images():
    h, w = 120, 160
    y, x = np.mgrid[0:h, 0:w]
    images = [Image.new("RGB", (64, 48), (c, c, c)) for c in (1, 37, 128, 200, 255)]
    images += [Image.fromarray(np.repeat((x * 255 // w).astype(np.uint8)[..., None], 3, 2)),
               Image.fromarray(np.repeat((y * 255 // h).astype(np.uint8)[..., None], 3, 2))]
    got = [phash64(im) for im in images]
    assert got == [reference(im) for im in images]
    # blank frames of any grey are the same picture to a perceptual hash
    assert len(set(got[:5])) == 1


def test_hash_is_an_unsigned_64_bit_int_with_the_dc_bit_first():
    for im in random_images()[:8]:
        h = phash64(im)
        assert isinstance(h, int) and 0 <= h < 2**64
        assert h >> 63 == 1  # the DC coefficient of a non-black image is the largest: above the median
    assert phash64(Image.new("RGB", (20, 20))) == 0  # all-black: every coefficient is exactly 0


def test_hash_ignores_mode_and_is_deterministic():
    img = smooth_image(3)
    assert phash64(img) == phash64(img.copy()) == phash64(img.convert("L")) == phash64(img.convert("RGBA"))


def brute_hamming(a: int, b: int) -> int:
    return sum(((a >> i) & 1) != ((b >> i) & 1) for i in range(64))


def test_hamming64_against_brute_force():
    rng = np.random.default_rng(7)
    words = [int(hi) << 32 | int(lo) for hi, lo in rng.integers(0, 2**32, (200, 2), dtype=np.uint64)]
    words += [0, 2**64 - 1, 2**63, 1, 0x5555555555555555, 0xAAAAAAAAAAAAAAAA]
    for a, b in zip(words, words[1:] + words[:1]):
        assert hamming64(a, b) == brute_hamming(a, b)
        assert hamming64(a, b) == hamming64(b, a)
        assert hamming64(a, a) == 0
    assert hamming64(0, 2**64 - 1) == 64
    assert hamming64(0x5555555555555555, 0xAAAAAAAAAAAAAAAA) == 64
    assert hamming64(2**63, 0) == 1


def test_jpeg_reencode_is_near():
    for i in range(10):
        img = smooth_image(i) if i % 2 else make_image(i, (96, 72), seed=1)
        assert hamming64(phash64(img), phash64(reencode(img, 80))) <= 8, i


def test_unrelated_images_are_far_apart():
    hashes = [phash64(smooth_image(i)) for i in range(10)] + [phash64(make_image(i, (64, 48), seed=5))
                                                             for i in range(10)]
    assert len(set(hashes)) == len(hashes)
    dists = [hamming64(hashes[i], hashes[j]) for i in range(len(hashes)) for j in range(i + 1, len(hashes))]
    assert np.mean(dists) > 16
    assert min(dists) > 8  # no unrelated pair would pass for a re-encode


def test_mirror_hash_is_the_hash_of_the_mirrored_image():
    pair = getattr(phash_mod, "phash64_pair", None)
    if pair is None:
        pytest.skip("pipeline.io.phash has no phash64_pair")
    for im in random_images() + list(gradients().values()):
        h, mirrored = pair(im)
        assert h == phash64(im)
        assert mirrored == phash64(ImageOps.mirror(im)), im.size


def test_orientation_hashes_match_the_turned_and_flipped_images():
    from PIL import ImageOps

    from pipeline.io.phash import phash64_orientations, transpose64

    rng = np.random.default_rng(11)
    for i in range(5):
        img = Image.fromarray(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)).resize((96 + 8 * i, 80),
                                                                                       Image.Resampling.BICUBIC)
        h, m, f, r = phash64_orientations(img)
        assert h == phash64(img)
        assert m == phash64(ImageOps.mirror(img)) and f == phash64(ImageOps.flip(img))
        assert r == phash64(img.transpose(Image.Transpose.ROTATE_180))
        t = [int(x) for x in transpose64(np.array([h, m, f, r], dtype=np.uint64))]
        # resampling a non-square image is not exactly transpose-symmetric: within 2 bits
        assert hamming64(t[0], phash64(img.transpose(Image.Transpose.TRANSPOSE))) <= 2
        assert hamming64(t[3], phash64(img.transpose(Image.Transpose.TRANSVERSE))) <= 2
        turned = {phash64(img.transpose(Image.Transpose.ROTATE_90)), phash64(img.transpose(Image.Transpose.ROTATE_270))}
        assert all(min(hamming64(a, b) for b in t) <= 2 for a in turned)
    bits = np.array([1 << 62], dtype=np.uint64)  # row 0, column 1 → row 1, column 0 (bit 55)
    assert int(transpose64(bits)[0]) == 1 << 55


def test_the_fast_path_extraction_uses_stays_within_a_few_bits_of_imagehash():
    """Extraction box-reduces before Lanczos (FAST_REDUCING_GAP): photo-like images keep their hash within 4 bits
    of imagehash's, mostly equal, far inside the duplicate threshold of 8; small images (no whole-factor
    reduction) are bit-exact."""
    photos = [smooth_image(i, (512, 341)) for i in range(24)] + [reencode(smooth_image(i, (640, 480)), 80)
                                                                   for i in range(24, 36)]
    dist = [hamming64(phash_mod.phash64_orientations(im, phash_mod.FAST_REDUCING_GAP)[0], reference(im))
            for im in photos]
    assert max(dist) <= 4 and np.mean(dist) <= 0.5, dist
    for im in (smooth_image(40, (60, 50)), make_image(5, (63, 64))):  # below 2 × 32 px: nothing to reduce
        assert phash_mod.phash64_orientations(im, phash_mod.FAST_REDUCING_GAP) == \
            phash_mod.phash64_orientations(im)


def test_the_four_orientations_are_the_hashes_of_the_turned_images():
    img = smooth_image(7, (200, 150))
    got = phash_mod.phash64_orientations(img)
    turned = (img, ImageOps.mirror(img), ImageOps.flip(img), img.rotate(180))
    assert got == tuple(reference(t) for t in turned)


def test_transpose64_in_chunks_is_the_same_permutation():
    """Chunked (so 10M hashes never take 15 GB of bits at once): any chunk size gives the same hashes, and
    transposing twice gives the hashes back."""
    from pipeline.io.phash import transpose64

    h = np.random.default_rng(2).integers(0, 2**63, 1000, dtype=np.int64).view(np.uint64) * np.uint64(2)
    whole = transpose64(h, chunk=10**6)
    assert np.array_equal(transpose64(h, chunk=7), whole) and np.array_equal(transpose64(whole, chunk=33), h)
