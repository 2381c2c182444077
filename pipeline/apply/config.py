"""Configuration of the apply stage: one frozen dataclass; every default is declared here once."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.errors import ConfigError

MOVE, LINK, UNDO = "move", "link", "undo"


@dataclass(frozen=True)
class ApplyConfig:
    """What `run_apply` does with the decided dedup groups of an output root made from an image folder.

    Move mode (default): each duplicate goes to `move_to` (default: `<images>.duplicates` beside the folder),
    under its relative path. Link mode (`link_keepers`): every kept image is hard-linked (copied across file
    systems) into that new folder; the collection is untouched. `undo`: restore what a manifest records.
    Nothing happens to a file without `yes` (a dry run prints the plan), except for `undo`, which only puts
    files back where they were and never overwrites."""

    out: str | None = None  # the output root: OUT/dedup/groups.parquet, OUT/config.json's image folder
    move_to: str | None = None  # quarantine folder; None: beside the collection (DEFAULT_SUFFIX)
    link_keepers: str | None = None  # link mode: a new folder that receives the keepers
    yes: bool = False  # act; without it, a dry run
    undo: str | None = None  # a manifest written by an earlier apply: put every file back
    batch_size: int = 256  # files per manifest write (the manifest is rewritten before each batch)
    progress: bool = True
    # Test hook (as faiss contrib's crash_at): SIGKILL this process after this many files were acted on.
    crash_after: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.undo is not None:
            if self.out or self.move_to or self.link_keepers:
                raise ConfigError("--undo takes a manifest alone: drop OUT, --move-to and --link-keepers")
        elif not self.out:
            raise ConfigError("give the output root of a dedup (OUT=...), or --undo MANIFEST")
        if self.move_to and self.link_keepers:
            raise ConfigError("--move-to and --link-keepers are two modes: give one")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")

    @property
    def mode(self) -> str:
        return UNDO if self.undo is not None else LINK if self.link_keepers else MOVE
