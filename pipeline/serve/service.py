"""What one server holds and answers from: the index, the stored vectors, the model, the images and the review."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

from pipeline import __version__
from pipeline.errors import MissingInputError, UserError
from pipeline.serve.config import ServeConfig
from pipeline.serve.embed import QueryEmbedder
from pipeline.serve.engine import Hit, ServedIndex
from pipeline.serve.errors import ServeError
from pipeline.serve.images import SourceError, SourceImages
from pipeline.serve.review import Review
from pipeline.serve.vectors import StoredVectors

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Results:
    """A query (what it was) and its neighbours."""

    query: dict
    hits: list[Hit]


def thumb_url(id_: int | None) -> str | None:
    """The thumbnail of an indexed image: by id, never by a path."""
    return None if id_ is None else f"/thumb/{int(id_)}"


class Service:
    """Everything a request needs, loaded once per process; parts that cannot load (no stored vectors, no
    recorded sources, a model whose weights are missing) answer 503 with the reason, the rest still serves."""

    def __init__(self, cfg: ServeConfig) -> None:
        self.cfg = cfg
        self.started = time.time()
        # paths given on the command line are checked here, not served as 503s
        if cfg.root and not Path(cfg.root).is_dir():
            what = "is not a folder" if Path(cfg.root).exists() else "does not exist"
            raise MissingInputError(f"--root {cfg.root} {what}: give the output root to serve")
        if cfg.weights and not Path(cfg.weights).is_file():
            what = "is not a file" if Path(cfg.weights).exists() else "does not exist"
            raise MissingInputError(f"--weights {cfg.weights} {what}: give the weights file the index was built with")
        self.index = ServedIndex(cfg.index, cfg.mmap)
        root = cfg.root or self.index.record.get("features")
        if not root:
            raise MissingInputError(f"{self.index.folder} does not record the output root it was built from: "
                                    f"pass --root OUT")
        self.root = Path(root)
        self.vectors, self.vectors_error = _optional(lambda: StoredVectors(self.index, str(self.root), cfg.progress))
        self.images, self.images_error = _optional(lambda: SourceImages(self.root, cfg.thumb_size))
        self.embedder = QueryEmbedder(self.index.provenance, self.index.feature, cfg.max_pixels, cfg.device,
                                      cfg.weights)
        self.review = Review(self.root, cfg.reviewer)

    # ------------------------------------------------------------------ searches
    def k(self, k: int | None) -> int:
        """The neighbours asked for, else the server's k. Out of range, below 1 or above max_k alike: 422, as
        every other query value outside its range (size, per_page, id); 400 is for a request of the wrong
        shape (no image, both id= and key=)."""
        k = self.cfg.k if k is None else k
        if not 1 <= k <= self.cfg.max_k:
            raise ServeError(422, f"k: must be 1 to {self.cfg.max_k}, got {k}")
        return k

    def row(self, id_: int) -> tuple[str, str, int]:
        try:
            return self.index.row(id_)
        except IndexError as exc:
            raise ServeError(404, str(exc)) from exc

    def by_id(self, id_: int, k: int | None = None) -> Results:
        """Neighbours of an indexed image, from its stored vector (as `make search` over the feature root)."""
        key, shard, index = self.row(id_)
        if self.vectors is None:
            raise ServeError(503, f"queries by id or key are unavailable: {self.vectors_error}")
        hits = self.index.search(self.vectors.vector(id_), self.k(k))
        return Results({"id": id_, "key": key, "shard": shard, "index": index}, hits)

    def by_key(self, key: str, k: int | None = None) -> Results:
        ids = self.index.ids_of_key(key)
        if not ids:
            raise ServeError(404, "no indexed image has this key")
        if len(ids) > 1:
            raise ServeError(409, f"{len(ids)} indexed images have this key (ids {', '.join(map(str, ids[:10]))}): "
                                  f"search by id")
        return self.by_id(ids[0], k)

    def by_image(self, data: bytes, k: int | None = None, name: str | None = None) -> Results:
        """Neighbours of uploaded image bytes, embedded as `make search` embeds an image file."""
        k = self.k(k)
        try:
            vector = self.embedder.embed(data)
        except UserError as exc:  # the model cannot be built here (weights missing, another fingerprint)
            raise ServeError(503, f"image queries are unavailable: {exc}") from exc
        return Results({"upload": name or "upload", "bytes": len(data)}, self.index.search(vector, k))

    # ------------------------------------------------------------------ images
    def thumbnail(self, id_: int, size: int | None = None) -> bytes:
        key, shard, index = self.row(id_)
        if self.images is None:
            raise ServeError(503, f"thumbnails are unavailable: {self.images_error}")
        try:
            return self.images.thumbnail(key, shard, index, size)
        except SourceError as exc:
            raise ServeError(404, f"image {id_} cannot be shown: {exc}") from exc

    def index_id(self, key: str, shard: str, index: int) -> int | None:
        """The index id of a row of another table (groups, selection), or None when the index does not hold it."""
        return self.index.id_at(shard, index, key)

    # ------------------------------------------------------------------ state
    def health(self) -> dict:
        record = self.index.record
        return {
            "status": "ok", "version": __version__, "uptime_seconds": round(time.time() - self.started, 1),
            "index": {"count": self.index.count, "factory": record.get("factory"), "feature": self.index.feature,
                      "dim": record.get("dim"), "loading": self.index.loading,
                      "fingerprint": self.index.provenance.get("fingerprint")},
            "model": {"name": self.index.provenance.get("model"), "loaded": self.embedder.loaded},
            "queries_by_id": self.vectors is not None, "thumbnails": self.images is not None,
            "groups": self.review.groups_path.exists(), "selection": self.review.selected_path.exists(),
            "limits": {k: v for k, v in asdict(self.cfg).items() if k in ("max_k", "max_upload_mb", "max_pixels")},
        }


def _optional(build: Callable[[], T]) -> tuple[T | None, str | None]:
    """(the part, None), or (None, why not) when it cannot be built for a reason the user can fix."""
    try:
        return build(), None
    except UserError as exc:
        log.warning("%s", exc)
        return None, str(exc)
