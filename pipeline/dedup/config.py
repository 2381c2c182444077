"""Configuration of the dedup stage: one frozen dataclass; every default is declared here once."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import ConfigError
from pipeline.io.inputs import is_within, same_path

# Which member of a duplicate component is kept: the copy a person would keep (dedup/keeper.py: pixels, colour,
# sharpness, compression, EXIF, age, path, read from the files), most pixels only, SemDeDup's policies over
# k-means clusters of the pool (hard = farthest from its cluster centroid, easy = closest), or a seeded random one.
KEEP_POLICIES = ("quality", "largest", "hard", "easy", "random")
CENTROID_POLICIES = ("hard", "easy")  # the ones that need the k-means clusters


@dataclass(frozen=True)
class DedupConfig:
    """Settings of one dedup run over an extract output root (and an optional reference set)."""

    features: str  # extract output root, or a .npy / Parquet made elsewhere (embedding edges only)
    keys: str | None = None  # a .npy's keys, one a line (default: row numbers)
    out: str | None = None  # default: <features>/dedup
    feature: str = "cls"
    threshold: float = 0.6  # LVD-142M, with SSCD copy-detection embeddings; model-dependent (docs/dedup.md)
    k: int = 64
    phash_distance: int = 8
    # with the embedding stage on, a pHash match links two images only when their cosine is at least this: 64-bit
    # hashes of unrelated images fall within 8 bits by chance once billions of pairs are compared (docs/dedup.md);
    # 0.45 is LVD-142M's looser copy bar (its decontamination threshold); -1 turns the check off
    phash_min_cosine: float = 0.45
    phash_exhaustive_max: int = 200_000  # above this many images, pHash checks only k-NN neighbours
    factory: str | None = None  # index for the k-NN graph; default: Flat ≤ 100k, else dedup_factory()
    nprobe: int = 32
    embedding: bool | None = None  # None: on, unless the features come from random weights
    reference: str | None = None  # extract output of the evaluation set to decontaminate against
    # extract output of a collection already processed: the new images are checked against it, never regrouping it
    against: str | None = None
    reference_threshold: float = 0.45
    # --where EXPR (roots/where.py): only matching rows take part; the others are kept as they are, reason "excluded"
    where: str | None = None
    # a decontamination dropping a larger share of the pool stops (the threshold is likely wrong for the model)
    max_contaminated: float = 0.1
    force: bool = False  # drop them anyway
    memory_budget_gb: float = 4.0
    # a component holding more than min(large_component, large_component_share × pool) images is warned about
    # (a threshold too low for the model chains unrelated images), but never one of large_component_min or fewer,
    # so pairs and small groups of a tiny pool stay quiet: see large_component_limit
    large_component: int = 1000
    large_component_share: float = 0.05
    large_component_min: int = 10
    progress: bool = True
    keep: str = "quality"  # one of KEEP_POLICIES
    clusters: int | None = None  # k-means clusters for keep hard/easy; None: auto_clusters(N)
    seed: int = 0  # k-means seeding and the random keep policy
    # dry run: count what each threshold would remove from one k-NN graph; writes dedup/sweep.parquet only
    sweep: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not 0 < self.threshold <= 1:
            raise ConfigError(f"threshold is a cosine similarity in (0, 1]; got {self.threshold}")
        if self.keep not in KEEP_POLICIES:
            raise ConfigError(f"keep must be one of {', '.join(KEEP_POLICIES)}; got {self.keep!r}")
        if self.clusters is not None and self.clusters < 1:
            raise ConfigError(f"clusters must be >= 1 (or unset for the automatic count); got {self.clusters}")
        if self.keep in CENTROID_POLICIES and self.embedding is False:
            raise ConfigError(f"--keep {self.keep} ranks images by their embedding (distance to their k-means "
                              "centroid), which --no-embedding turns off: drop --no-embedding, or use --keep "
                              "largest or random")
        if self.keep not in ("quality", "largest") and self.against:
            raise ConfigError("--against keeps the best new image of each group of new images (--keep quality or "
                              "largest); drop --keep")
        for t in self.sweep:
            if not 0 < t <= 1:
                raise ConfigError(f"--sweep thresholds are cosine similarities in (0, 1]; got {t}")
        if self.sweep and self.embedding is False:
            raise ConfigError("--sweep varies the embedding threshold, which --no-embedding turns off: drop one")
        if self.sweep and (self.against or self.reference):
            raise ConfigError("--sweep counts the pool's own duplicates: run it without --against/--reference")
        if not 0 <= self.max_contaminated <= 1:
            raise ConfigError(f"max_contaminated is a share of the pool, 0 to 1; got {self.max_contaminated}")
        if self.k < 1:
            raise ConfigError("k must be >= 1")
        if self.against and self.reference:
            raise ConfigError("--against and --reference are separate runs: decontaminate the collection first, "
                              "then check new images against it")
        for flag, other in (("against", self.against), ("reference", self.reference)):
            if other and same_path(other, self.features):
                raise ConfigError(f"--{flag} {other} is FEATURES ({self.features}) itself: a root is not compared "
                                  f"with itself; give --{flag} another extract output")
            if other and self.out and is_within(self.out, other):
                raise ConfigError(f"--{flag} {other} is read-only to this dedup, but its output {self.out} lies "
                                  f"inside it: choose an --out outside {other}")
        if not -1 <= self.phash_min_cosine <= 1:
            raise ConfigError(f"phash_min_cosine is a cosine similarity in [-1, 1] (-1: no check); got "
                              f"{self.phash_min_cosine}")
        if not 0 <= self.phash_distance <= 64:
            raise ConfigError(f"phash_distance must be 0 to 64 bits, got {self.phash_distance}")
        if not 0 < self.large_component_share <= 1:
            raise ConfigError(f"large_component_share is a share of the pool, (0, 1]; got {self.large_component_share}")
        if self.large_component_min < 2:
            raise ConfigError(f"large_component_min must be >= 2 (a pair is never suspect); got "
                              f"{self.large_component_min}")

    def large_component_limit(self, images: int) -> float:
        """The size above which a component is warned about in a pool of `images`: the smaller of
        `large_component` and `large_component_share` of the pool, at least `large_component_min`."""
        return max(min(self.large_component, self.large_component_share * images), self.large_component_min)


def parse_sweep(text: str) -> tuple[float, ...]:
    """`0.95,0.9,0.85` → (0.95, 0.9, 0.85): distinct thresholds, strictest first; a clear error otherwise."""
    values = []
    for item in (v.strip() for v in text.split(",")):
        if not item:
            continue
        try:
            values.append(float(item))
        except ValueError:
            raise ConfigError(f"--sweep takes comma-separated cosine thresholds, e.g. 0.95,0.9,0.85; "
                              f"{item!r} is not a number") from None
    if not values:
        raise ConfigError("--sweep needs at least one threshold, e.g. 0.95,0.9,0.85")
    for t in values:
        if not 0 < t <= 1:
            raise ConfigError(f"--sweep thresholds are cosine similarities in (0, 1]; got {t}")
    return tuple(sorted(set(values), reverse=True))
