"""dinocurate: batch image feature extraction, search, dedup and curation with DINOv2/DINOv3."""

__version__ = "0.1.0"
