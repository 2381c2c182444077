"""The keeper a person would choose in each duplicate group, criterion by criterion, with the reason it won.

Each criterion narrows the group's candidates to those close enough to the best on it, so a small difference
on an early criterion (a JPEG's slightly crisper block edges) does not outvote a large one on a later criterion
(quality 30 against 92). Order: readable and unchanged since extract; more pixels; colour over greyscale;
sharper (grey Laplacian variance at a common size, within SHARPNESS_SHARE of the sharpest); less compressed
(JPEG quality estimate within QUALITY_SLACK; lossless formats above any JPEG); has EXIF; byte-identical
candidates go straight to the path rule; earliest modification time; shortest path; first by name.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from pipeline.dedup.groups import Keys, take_values
from pipeline.dedup.signals import ImageSignals, read_signals
from pipeline.io.decode import DATA_ERRORS
from pipeline.layout import OutputRoot
from pipeline.roots.sources import ImageSource, open_source, read_images

log = logging.getLogger(__name__)

SHARPNESS_SHARE = 0.5  # candidates at least this share of the sharpest stay in (JPEG q30 keeps 0.6-0.9 of it)
QUALITY_SLACK = 5.0  # JPEG quality points within the best that count as equally compressed
MTIME_SLACK = 2.0  # seconds: FAT file systems store modification times in 2 s steps
READ_CHUNK = 256  # grouped images read per batch (PIL decodes outside the GIL: one thread per core)


@dataclass(frozen=True)
class Candidate:
    """One member of a group as the ranking sees it; `signals` None when its file could not be read."""

    key: str
    signals: ImageSignals | None
    pixels: int  # from the features (width × height) when the file could not be read
    mtime: float | None = None
    problem: str | None = None  # why the file was not read (gone, changed since extract, does not decode)


def _fmt_time(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _quality_text(s: ImageSignals) -> str:
    if s.quality is None:
        return s.format or "unknown format"
    return f"lossless {s.format}" if s.quality > 100 else f"JPEG quality ~{s.quality:.0f}"


def _narrow(alive: list[int], keepers: list[int]) -> tuple[list[int], list[int]]:
    kept = set(keepers)
    return [i for i in alive if i in kept], [i for i in alive if i not in kept]


def rank(cands: Sequence[Candidate]) -> tuple[int, str]:
    """The index of the candidate to keep and why it won (the criteria that decided, in order)."""
    alive = list(range(len(cands)))
    steps: list[str] = []
    if len(alive) == 1:
        return 0, "alone"

    readable = [i for i in alive if cands[i].signals is not None]
    if readable and len(readable) < len(alive):
        alive, out = _narrow(alive, readable)
        problems = sorted({cands[i].problem or "unreadable" for i in out})
        steps.append(f"the only file{'s' if len(alive) > 1 else ''} that could be checked "
                     f"({len(out)} other: {'; '.join(problems)})")
    sig = {i: cands[i].signals for i in alive}
    identical = False
    if not readable:
        steps.append("no file of the group could be read, ranked by the extracted size and the path only")

    pixels = {i: (sig[i].pixels if sig[i] else cands[i].pixels) for i in alive}
    best = max(pixels.values())
    alive, out = _narrow(alive, [i for i in alive if pixels[i] == best])
    if out:
        w = next(i for i in alive)
        size = f"{sig[w].width}x{sig[w].height}" if sig[w] else f"{best} px"
        worst = max(out, key=lambda i: pixels[i])
        other = f"{sig[worst].width}x{sig[worst].height}" if sig[worst] else f"{pixels[worst]} px"
        steps.append(f"most pixels ({size} against {other})")

    if readable:
        colour = [i for i in alive if sig[i].colour]
        if colour:
            alive, out = _narrow(alive, colour)
            if out:
                steps.append(f"colour ({len(out)} greyscale cop{'y' if len(out) == 1 else 'ies'})")
        top = max(sig[i].sharpness for i in alive)
        alive, out = _narrow(alive, [i for i in alive if sig[i].sharpness >= SHARPNESS_SHARE * top])
        if out:
            blurry = max(sig[i].sharpness for i in out)
            steps.append(f"sharper (detail {top / max(blurry, 1e-9):.1f}x the blurrier cop"
                         f"{'y' if len(out) == 1 else 'ies'})")
        known = [sig[i].quality for i in alive if sig[i].quality is not None]
        if known:
            q = max(known)
            alive, out = _narrow(alive, [i for i in alive
                                         if sig[i].quality is None or sig[i].quality >= q - QUALITY_SLACK])
            if out:
                w = max(alive, key=lambda i: sig[i].quality if sig[i].quality is not None else -1)
                worse = max(out, key=lambda i: sig[i].quality)
                steps.append(f"less compressed ({_quality_text(sig[w])} against {_quality_text(sig[worse])})")
        exif = [i for i in alive if sig[i].exif]
        if exif:
            alive, out = _narrow(alive, exif)
            if out:
                steps.append("has EXIF metadata (camera, date), the other cop"
                             f"{'y has' if len(out) == 1 else 'ies have'} none")
        identical = len(alive) > 1 and len({sig[i].sha1 for i in alive}) == 1
        if identical:
            steps.append(f"byte-identical to {len(alive) - 1} other{'s' if len(alive) > 2 else ''}")

    if len(alive) > 1 and not (readable and identical):
        known = [cands[i].mtime for i in alive if cands[i].mtime is not None]
        if known:
            first = min(known)
            alive, out = _narrow(alive, [i for i in alive if cands[i].mtime is None
                                         or cands[i].mtime <= first + MTIME_SLACK])
            if out:
                later = min(cands[i].mtime for i in out)
                steps.append(f"modified earliest ({_fmt_time(first)} against {_fmt_time(later)})")
    if len(alive) > 1:
        short = min(len(cands[i].key) for i in alive)
        alive, out = _narrow(alive, [i for i in alive if len(cands[i].key) == short])
        if out:
            steps.append("shortest path")
    if len(alive) > 1:
        alive = [min(alive, key=lambda i: cands[i].key)]
        steps.append("first by name")
    if not steps:
        steps.append("the others tie on every criterion")
    return alive[0], "; ".join(steps)


Item = tuple[str, str, int, bytes | None]  # key, shard, index, sha1 at extract
Read = tuple[ImageSignals | None, float | None, str | None]  # signals, mtime, why not read
SignalReader = Callable[[list[Item]], list[Read]]


def source_reader(root: str | os.PathLike | None, progress: bool = False) -> SignalReader | None:
    """A reader of (key, shard, index, sha1 at extract) → (signals, mtime, problem) from an extract root's
    recorded inputs, decoding on every core; None when the features were made elsewhere (no images to read)."""
    if root is None:
        return None
    if not OutputRoot(root).config_path.is_file():
        return None
    source = open_source(root)
    if source is None:
        return None

    def read(items: list[Item]) -> list[Read]:
        out: list[Read] = []
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool, \
                tqdm(total=len(items), desc="dedup: keeper", unit="img", disable=not progress) as bar:
            for start in range(0, len(items), READ_CHUNK):
                chunk = items[start:start + READ_CHUNK]
                got = read_images(source, [(k, s, int(i)) for k, s, i, _ in chunk])
                data = [got.get((k, s, int(i))) for k, s, i, _ in chunk]
                out += pool.map(_signals_of, [source] * len(chunk), [it[0] for it in chunk], data,
                                [it[3] for it in chunk])
                bar.update(len(chunk))
        return out

    return read


def _signals_of(source: ImageSource, key: str, data: bytes | str | None, sha1: bytes | None) -> Read:
    if not isinstance(data, bytes):
        return None, None, f"not readable: {data or 'missing'}"
    mtime = None
    if source.kind == "folder":
        try:
            mtime = Path(source.path, key).stat().st_mtime
        except OSError:
            mtime = None
    try:
        signals = read_signals(data)
    except DATA_ERRORS as exc:
        return None, mtime, f"does not decode: {type(exc).__name__}"
    if sha1 is not None and signals.sha1 != sha1:
        return None, mtime, "changed since extract"
    return signals, mtime, None


def choose(component: np.ndarray, sizes: np.ndarray, pixels: np.ndarray, keys: Keys, shards: Keys,
           index: np.ndarray, sha1: list[bytes | None] | pa.Array | pa.ChunkedArray, reader: SignalReader | None
           ) -> tuple[np.ndarray, list[str | None], dict]:
    """Keep mask, each keeper's reason (None on other rows) and counts for summary.json, over every group.
    Keys, shards and sha1s may be Arrow columns: only the grouped rows' become Python objects."""
    n = len(keys)
    keep = np.ones(n, bool)
    reasons: list[str | None] = [None] * n
    grouped = np.flatnonzero(sizes[component] > 1) if n else np.zeros(0, np.int64)
    keep[grouped] = False
    if not len(grouped):
        return keep, reasons, {"read": 0, "unreadable": 0}
    names = take_values(keys, grouped)
    items = [(key, shard or "", int(index[i]), digest) for key, shard, i, digest in
             zip(names, take_values(shards, grouped), grouped, take_values(sha1, grouped))]
    if reader is None:
        signals = [(None, None, "features made elsewhere: no image to read")] * len(items)
    else:
        t0 = time.perf_counter()
        signals = reader(items)
        log.info("dedup: read %d grouped images for the keeper in %.1f s", len(items), time.perf_counter() - t0)
    by_component: dict[int, list[int]] = {}
    for pos, row in enumerate(grouped):
        by_component.setdefault(int(component[row]), []).append(pos)
    for positions in by_component.values():
        cands = [Candidate(names[p], signals[p][0], int(pixels[grouped[p]]), signals[p][1], signals[p][2])
                 for p in positions]
        won, why = rank(cands)
        row = int(grouped[positions[won]])
        keep[row], reasons[row] = True, why
    unreadable = sum(1 for s in signals if s[0] is None)
    if unreadable and reader is not None:
        log.warning("dedup: %d of %d grouped images could not be checked for the keeper (gone, changed since "
                    "extract, or not decodable): they are kept only when no member of their group could be read",
                    unreadable, len(items))
    return keep, reasons, {"read": len(items) - unreadable, "unreadable": unreadable}
