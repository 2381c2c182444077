"""Configuration of the evaluate stage: the protocol's settings, one frozen dataclass."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pipeline.errors import ConfigError
from pipeline.evaluate.knn import KS, TEMPERATURE
from pipeline.evaluate.linear import MAX_ITER, WEIGHT_DECAYS
from pipeline.roots.features import FEATURE_CHOICES, check_feature

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalConfig:
    """One evaluation: several feature roots x feature kinds, all with the same labels and split."""

    features: tuple[str, ...]  # extract output roots, or .npy / Parquet made elsewhere
    keys: str | None = None  # the keys of the .npy among them, one a line (default: row numbers)
    labels: str = "folder"  # "folder" (first path component of a folder extract's key) or a .csv/.parquet file
    feature: tuple[str, ...] = ("cls",)
    ks: tuple[int, ...] = KS
    temperature: float = TEMPERATURE
    val_fraction: float = 0.2  # seeded stratified split, when the labels file has no `split` column
    seed: int = 0
    knn: bool = True
    linear: bool = True
    weight_decays: tuple[float, ...] = WEIGHT_DECAYS
    heldout_fraction: float = 0.2  # of train, to choose the weight decay
    max_iter: int = MAX_ITER  # L-BFGS iterations per fit
    out: str | None = None  # folder; default FEATURES[0]/eval

    def __post_init__(self) -> None:
        if not self.features:
            raise ConfigError("give at least one feature root")
        if not self.feature:
            raise ConfigError(f"feature must be among {FEATURE_CHOICES}, got {list(self.feature)}")
        for feature in self.feature:
            check_feature(feature, *self.features)
        if not self.ks or min(self.ks) < 1:
            raise ConfigError(f"k values must be >= 1, got {list(self.ks)}")
        if self.temperature <= 0:
            raise ConfigError("temperature must be positive")
        for name in ("val_fraction", "heldout_fraction"):
            if not 0 < getattr(self, name) < 1:
                raise ConfigError(f"{name} must be between 0 and 1, got {getattr(self, name)}")
        if not self.weight_decays or min(self.weight_decays) < 0:
            raise ConfigError("weight decays must be >= 0")
        if not (self.knn or self.linear):
            raise ConfigError("nothing to do: both k-NN and the linear probe are off")

    def protocol(self) -> dict:
        """Settings that change the numbers besides the data (labels and split have their own digest)."""
        return {"ks": list(self.ks), "temperature": self.temperature, "weight_decays": list(self.weight_decays),
                "heldout_fraction": self.heldout_fraction, "max_iter": self.max_iter, "seed": self.seed}
