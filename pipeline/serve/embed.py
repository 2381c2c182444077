"""Uploaded images → query vectors with the model, weights and preprocessing the index records (loaded once).

An upload goes through the extractor's own per-sample path (`ExtractDataset.process`: decode with EXIF
orientation, JPEG draft, the model's resize and crop) and forward pass, and its features are rounded to the
stored dtype and normalised as stored features are, so its neighbours are those `make search` gives for the
same file. Before any of that, the upload must be an image of an allowed format within the pixel limit.
"""

from __future__ import annotations

import io
import logging
import re
import threading
import warnings
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
from PIL import Image, UnidentifiedImageError

from pipeline.errors import MixedProvenanceError
from pipeline.index.search import config_from_provenance
from pipeline.io.decode import DATA_ERRORS, SampleError
from pipeline.provenance import require_same
from pipeline.roots.features import feature_columns, to_matrix
from pipeline.serve.errors import ServeError

if TYPE_CHECKING:  # torch, timm and the extractor load with the model, on the first image query
    from pipeline.extract.backbone import Backbone
    from pipeline.extract.config import ExtractConfig
    from pipeline.extract.loader import ExtractDataset

log = logging.getLogger(__name__)

# Formats Pillow decodes itself; never EPS/PDF-like formats that hand the bytes to outside programs.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "PPM")  # JPEG opens MPO too


class UploadError(ServeError):
    """An upload the server refuses (empty, not an allowed image, too many pixels, too many bytes)."""


def check_image(data: bytes, max_pixels: int) -> tuple[str, int, int]:
    """(format, width, height) of an upload from its header alone, or UploadError: empty (400), not an image of
    an allowed format (415), more pixels than `max_pixels` (413, a decompression bomb is caught here before
    anything is decoded), a broken header (400)."""
    if not data:
        raise UploadError(400, "the upload is empty: send an image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is checked below
            with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as img:
                fmt, (w, h) = img.format, img.size
    except Image.DecompressionBombError as exc:  # past Pillow's own limit: said with the server's
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        raise UploadError(413, too_many_pixels(f"{int(pixels[1])} pixels" if pixels else "more pixels",
                                               max_pixels)) from None
    except UnidentifiedImageError as exc:
        raise UploadError(415, f"not an image ({', '.join(ALLOWED_FORMATS)} are accepted)") from exc
    except DATA_ERRORS as exc:
        raise UploadError(400, f"the image cannot be read: {type(exc).__name__}") from exc
    if w * h > max_pixels:
        raise UploadError(413, too_many_pixels(f"{w}x{h} = {w * h} pixels", max_pixels))
    return fmt, w, h


def too_many_pixels(what: str, max_pixels: int) -> str:
    return f"the image has {what}, more than the server's limit of {max_pixels}"


def query_config(provenance: dict, device: str, weights: str | None) -> ExtractConfig:
    """The extract config that reproduces the index's features (extras and kept columns included: they are in
    the fingerprint), on `device`; `weights` replaces a weights file that moved."""
    prov = provenance
    if weights:
        prov = {**provenance, "weights": {**provenance["weights"], "source": "file", "path": weights}}
    return replace(config_from_provenance(prov, out="(served)", images="(uploads)"), device=device)


class QueryEmbedder:
    """Builds the index's model on first use (thread-safe), then embeds one upload at a time."""

    def __init__(self, provenance: dict, feature: str, max_pixels: int, device: str = "auto",
                 weights: str | None = None) -> None:
        self.provenance, self.feature, self.max_pixels = provenance, feature, max_pixels
        self.device, self.weights = device, weights
        self.backbone: Backbone | None = None
        self.dataset: ExtractDataset | None = None
        self.load_lock = threading.Lock()
        self.forward_lock = threading.Lock()
        self.float16 = provenance.get("dtype", "float16") == "float16"  # the stored precision of features

    @property
    def loaded(self) -> bool:
        return self.backbone is not None

    def load(self) -> tuple[Backbone, ExtractDataset]:
        """The model (built once, checked to have the index's fingerprint) and the per-sample preprocessing."""
        with self.load_lock:
            if self.backbone is None:
                from pipeline.extract.backbone import create_backbone
                from pipeline.extract.device import resolve_device
                from pipeline.extract.loader import ExtractDataset

                cfg = query_config(self.provenance, self.device, self.weights)
                backbone = create_backbone(cfg, resolve_device(cfg.device))
                require_same(self.provenance, backbone.provenance(), "the index's features", "the server's model",
                             MixedProvenanceError)
                self.dataset = ExtractDataset([], backbone.preprocess, 1, self.max_pixels, cfg.jpeg_draft)
                self.backbone = backbone
                log.info("model %s loaded on %s for image queries", cfg.model, backbone.device)
        return self.backbone, self.dataset

    def embed(self, data: bytes) -> np.ndarray:
        """The (D,) float32 normalised query vector of encoded image bytes; UploadError for a bad upload."""
        check_image(data, self.max_pixels)
        backbone, dataset = self.load()
        try:
            tensor, _ = dataset.process("upload", 0, "upload", data)
        except SampleError as err:
            if err.reason == "DecompressionBombError":
                raise UploadError(413, too_many_pixels("more pixels", self.max_pixels)) from None
            raise UploadError(400, f"the image cannot be used: {err.reason}") from err
        import torch

        from pipeline.extract.prefetch import HostFeatures

        dtype = torch.float16 if self.float16 else torch.float32
        with self.forward_lock:
            feats = HostFeatures(backbone(tensor.unsqueeze(0).to(backbone.device)), dtype).numpy()
        columns = feature_columns(self.feature)
        arrays = [pa.FixedSizeListArray.from_arrays(pa.array(feats[c].reshape(-1)), feats[c].shape[1])
                  for c in columns]
        return to_matrix(pa.RecordBatch.from_arrays(arrays, names=columns), self.feature)[0]
