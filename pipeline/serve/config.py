"""Configuration of the search and review server: one frozen dataclass; every default is declared here once."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import ConfigError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ServeConfig:
    """What `make serve` loads and how it answers."""

    index: str  # index folder, or the extract output holding index/
    root: str | None = None  # output root of the groups, selection and review; default: the index's features root
    host: str = "127.0.0.1"  # loopback only, unless told (then anyone who reaches the port can search and review)
    port: int = 8000
    k: int = 20  # neighbours shown by default
    max_k: int = 200  # the most neighbours one query may ask for
    max_upload_mb: float = 20.0  # request bodies above this are refused (413) before they are read
    max_pixels: int = 50_000_000  # decoded images above this are refused (413): decompression bombs
    per_page: int = 20  # dedup groups / selection rows per page
    thumb_size: int = 256  # thumbnail side in pixels
    reviewer: str | None = None  # `who` of the decisions made here; default: the OS user
    device: str = "auto"  # where the model embeds uploaded images
    weights: str | None = None  # the index's weights file when it moved (checked against its sha256)
    mmap: bool = True  # memory-map the index where Faiss can (indexes larger than RAM)
    progress: bool = True  # a progress bar while the stored vectors are copied (first start only)

    def __post_init__(self) -> None:
        if not 0 <= self.port < 65536:
            raise ConfigError(f"port must be 1 to 65535 (or 0: any free port), got {self.port}")
        if not 1 <= self.k <= self.max_k:
            raise ConfigError(f"k must be 1 to max_k ({self.max_k}), got {self.k}")
        if self.max_upload_mb <= 0 or self.max_pixels < 1:
            raise ConfigError("max_upload_mb and max_pixels must be positive")
        if not 1 <= self.per_page <= 500:
            raise ConfigError(f"per_page must be 1 to 500, got {self.per_page}")
        if not 16 <= self.thumb_size <= 1024:
            raise ConfigError(f"thumb_size must be 16 to 1024 pixels, got {self.thumb_size}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    @property
    def exposed(self) -> bool:
        """True when the server listens beyond this machine."""
        return self.host not in LOOPBACK
