"""DataLoader side of extraction: shards → samples → decode, hash, preprocess → uint8 batches + shard ends."""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline.extract.device_decode import Encoded, probe_jpeg
from pipeline.extract.preprocess import Preprocess
from pipeline.io.decode import DATA_ERRORS, SampleError, decode_image
from pipeline.io.phash import FAST_REDUCING_GAP, phash64_orientations
from pipeline.io.samples import ShardEnd, failure_row, iter_part, kept_values, pick_image
from pipeline.io.shards import Shard, split_by_rank
from pipeline.io.stats import image_stats

log = logging.getLogger(__name__)

# Images are decoded at no less than this many px on the short side, so stored pHashes do not depend on the
# model's resolution.
HASH_FLOOR = 256


@dataclass
class SampleMeta:
    key: str
    shard: str
    index: int
    width: int
    height: int
    sha1: bytes
    phash: int
    phash_mirror: int
    phash_flip: int
    phash_rot180: int
    kept: tuple[str | None, ...] = ()  # the --keep-columns values, in that order
    stats: tuple[float, ...] = ()  # --extras stats: the io.stats.STATS_COLUMNS values, in that order


@dataclass
class Batch:
    images: torch.Tensor | None  # uint8 NCHW, all one shape
    metas: list[SampleMeta]
    ended: list[ShardEnd]
    # CPU time of the worker process (all its threads) since the batch it sent before: what the loader really
    # spends in a run (reading, decoding, hashing, resizing, batching, sending); 0 without workers
    cpu_seconds: float = 0.0
    # --decode gpu: the JPEGs of `metas`, in order, still encoded (images is None until the device decodes them)
    encoded: list[Encoded] = field(default_factory=list)

    def pin_memory(self) -> Batch:
        if self.images is not None:
            self.images = self.images.pin_memory()
        return self


ENCODED = ("encoded",)  # the Batcher's bucket of JPEGs for the device to decode


class Batcher:
    """Groups same-shape tensors into batches; a shard's end rides on the batch that empties it."""

    def __init__(self, batch_size: int, max_buffered: int) -> None:
        self.batch_size, self.max_buffered = batch_size, max_buffered
        self.buckets: dict[tuple, list[tuple[torch.Tensor, SampleMeta]]] = {}
        self.pending: list[ShardEnd] = []

    def add(self, item: torch.Tensor | Encoded, meta: SampleMeta) -> Iterator[Batch]:
        """A decoded image (grouped by shape) or, for the device to decode, an encoded JPEG."""
        key = ENCODED if isinstance(item, Encoded) else tuple(item.shape)
        bucket = self.buckets.setdefault(key, [])
        bucket.append((item, meta))
        if len(bucket) >= self.batch_size:
            yield self._emit(key)

    def end_shard(self, end: ShardEnd) -> Iterator[Batch]:
        self.pending.append(end)
        if sum(len(b) for b in self.buckets.values()) > self.max_buffered:
            yield from self.flush()  # dynamic sizes: bound memory and how long ends wait
        elif not any(m.shard == end.shard for b in self.buckets.values() for _, m in b):
            yield Batch(None, [], self._ready())

    def flush(self) -> Iterator[Batch]:
        for shape in list(self.buckets):
            yield self._emit(shape)
        if self.pending:
            yield Batch(None, [], self._ready())

    def _emit(self, shape: tuple) -> Batch:
        items = self.buckets.pop(shape)
        if shape == ENCODED:
            return Batch(None, [m for _, m in items], self._ready(), encoded=[e for e, _ in items])
        images = assemble([t for t, _ in items], shared=get_worker_info() is not None)
        return Batch(images, [m for _, m in items], self._ready())

    def _ready(self) -> list[ShardEnd]:
        held = {m.shard for b in self.buckets.values() for _, m in b}
        ready = [e for e in self.pending if e.shard not in held]
        self.pending = [e for e in self.pending if e.shard in held]
        return ready


def assemble(tensors: list[torch.Tensor], shared: bool = False) -> torch.Tensor:
    """Same-shape CPU tensors stacked into one new contiguous batch; `shared`: made in shared memory (a
    DataLoader worker's batch, sent to the model's process without another copy, as torch's default_collate
    does). The copy is numpy's: the images are strided views (the channels of an RGBX resize), which numpy
    copies faster than torch.stack, also into shared memory (docs/PERFORMANCE.md, loader)."""
    first = tensors[0]
    if shared:
        storage = first.untyped_storage()._new_shared(len(tensors) * first.numel() * first.element_size())
        out = torch.empty(0, dtype=first.dtype).set_(storage).view(len(tensors), *first.shape)
    else:
        out = torch.empty((len(tensors), *first.shape), dtype=first.dtype)
    dst = out.numpy()
    for i, t in enumerate(tensors):
        np.copyto(dst[i], t.numpy())
    return out


class ForwardGate:
    """Keeps a CPU loader's workers off the cores while the model's forward pass runs on them.

    On a CPU the model's threads and the workers share the cores. A worker that takes a core in the middle of
    a forward pass stalls the model's other threads at the operation's barrier, so its CPU time costs the model
    up to twice that in wall time (docs/PERFORMANCE.md, forward gate). With the gate, the workers
    decode between forward passes only, when the model waits for them or writes, and a batch costs its loader
    CPU time spread over the workers, no more. The runner closes the gate around each forward pass; a worker
    waits at it before each sample, between its stages and before it assembles a batch, so at most one stage's
    work overlaps a forward (the workers' CPU time while the gate was closed is `processes_cpu_seconds`)."""

    POLL_SECONDS = 1.0  # how often a waiting worker checks that the process that made the gate still runs

    def __init__(self) -> None:
        self._open = multiprocessing.Event()
        self._open.set()
        self._owner = os.getpid()

    def wait(self) -> None:
        """Return when the gate is open; exit the worker if its parent is gone (the gate would never open)."""
        while not self._open.wait(self.POLL_SECONDS):
            if os.getppid() != self._owner:
                raise SystemExit(0)

    @contextmanager
    def closed(self) -> Iterator[None]:
        """The gate closed for the duration of the block, open again whatever happens in it."""
        self._open.clear()
        try:
            yield
        finally:
            self._open.set()

    @property
    def is_open(self) -> bool:
        return self._open.is_set()


class ExtractDataset(IterableDataset):
    """Shards (already split by rank) split again by DataLoader worker; yields Batch objects.

    `parts` > 1 (fewer shards than workers: a small folder is one shard) splits each shard into that many
    interleaved parts, sample i in part i % parts (io.samples.iter_part), each part a unit of work for one
    worker that decodes its own samples, and each part ends with its own ShardEnd (the runner merges the parts
    of a shard before it writes it). `gate`: workers wait at it before each sample (ForwardGate)."""

    def __init__(self, shards: list[Shard], preprocess: Preprocess, batch_size: int, max_pixels: int,
                 jpeg_draft: bool = True, image_key: str | None = None, keep_columns: tuple[str, ...] = (),
                 stats: bool = False, parts: int = 1, gate: ForwardGate | None = None,
                 device_decode: bool = False) -> None:
        super().__init__()
        if parts < 1:
            raise ValueError(f"parts must be >= 1, got {parts}")
        self.shards, self.preprocess, self.batch_size = shards, preprocess, batch_size
        self.max_pixels, self.jpeg_draft, self.image_key = max_pixels, jpeg_draft, image_key
        self.keep_columns, self.stats, self.parts = tuple(keep_columns), stats, parts
        self.gate, self.device_decode = gate, device_decode

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        if info is not None:
            torch.set_num_threads(1)
            yield from _with_cpu_time(self._batches(info, self.gate))
        else:  # in the model's own process: its CPU time is the model's too, and the gate is never closed
            yield from self._batches(None, None)

    def _batches(self, info, gate: ForwardGate | None) -> Iterator[Batch]:
        units = [(shard, part) for shard in self.shards for part in range(self.parts)]
        units = units if info is None else split_by_rank(units, info.id, info.num_workers)
        batcher = Batcher(self.batch_size, max_buffered=8 * self.batch_size)
        # the gate, passed before each sample, between its stages and before any batch is assembled (into
        # shared memory in a worker: see `assemble`)
        wait = gate.wait if gate is not None else None
        for shard, part in units:
            end = ShardEnd(shard.id, part=part, parts=self.parts)
            try:
                for index, sample in iter_part(shard, end, self.keep_columns, part, self.parts):
                    _call(wait)
                    end.samples += 1
                    key = sample.get("__key__", "")
                    try:
                        tensor, meta = self.process(shard.id, index, key, pick_image(sample, self.image_key),
                                                    between=wait)
                        if self.keep_columns:
                            meta.kept = kept_values(sample, self.keep_columns)
                    except SampleError as err:
                        end.failures.append(failure_row(shard.id, index, key, err))
                        continue
                    _call(wait)
                    yield from batcher.add(tensor, meta)
            except OSError as exc:  # missing file, network, pipe: leave the shard for a rerun
                end.error = f"{type(exc).__name__}: {exc}"[:500]
                log.error("shard %s (%s) could not be read: %s", shard.id, shard.source, end.error)
            _call(wait)
            yield from batcher.end_shard(end)
        _call(wait)
        yield from batcher.flush()

    def decode_target(self, width: int, height: int) -> tuple[int, int]:
        """What the model needs, but never less than HASH_FLOOR px on the short side: JPEG draft then keeps
        the stored pHash the same whatever the model's resolution."""
        need_w, need_h = self.preprocess.needed_size(width, height)
        scale = HASH_FLOOR / min(width, height)
        return max(need_w, min(width, round(width * scale))), max(need_h, min(height, round(height * scale)))

    def process(self, shard: str, index: int, key: str, data: bytes,
                between: Callable[[], None] | None = None,
                cpu: bool = False) -> tuple[torch.Tensor | Encoded, SampleMeta]:
        """Bytes → (uint8 CHW tensor, metadata); data problems raise SampleError with the stage. `between` is
        called between the stages (decode, pHashes, resize): the workers' ForwardGate. With `device_decode`, a
        JPEG the device can decode comes back encoded, its pHashes to be filled in there (device_batches.py); `cpu`:
        decoded here all the same (a JPEG the device failed on)."""
        sha1 = hashlib.sha1(data).digest()
        if self.device_decode and not cpu:
            encoded = probe_jpeg(data, self.max_pixels)
            if encoded is not None:
                return encoded, SampleMeta(key, shard, index, encoded.width, encoded.height, sha1, 0, 0, 0, 0)
        decoded = decode_image(data, self.max_pixels, target=self.decode_target, draft=self.jpeg_draft)
        _call(between)
        try:
            hashes = phash64_orientations(decoded.view, FAST_REDUCING_GAP)
            _call(between)
            tensor = self.preprocess(decoded.pixels, (decoded.width, decoded.height))
            # quality signals on the model's input, already made: cheap beside the decode (io/stats.py)
            stats = image_stats(tensor.numpy(), decoded.width, decoded.height) if self.stats else ()
        except DATA_ERRORS as exc:
            raise SampleError("preprocess", type(exc).__name__, str(exc)) from exc
        return tensor, SampleMeta(key, shard, index, decoded.width, decoded.height, sha1, *hashes, stats=stats)


def _call(fn: Callable[[], None] | None) -> None:
    if fn is not None:
        fn()


def _with_cpu_time(batches: Iterator[Batch]) -> Iterator[Batch]:
    """Each batch stamped with this process's CPU time since the previous one was handed on."""
    start = time.process_time()
    for batch in batches:
        now = time.process_time()
        batch.cpu_seconds = now - start
        yield batch
        start = now  # sending it (pickling into shared memory, in the queue's thread) counts for the next


WORKER_NICENESS = 19


def processes_cpu_seconds(pids: list[int], proc: str = "/proc") -> float | None:
    """CPU time so far of these processes, all their threads, to the nanosecond (Linux's
    /proc/PID/task/TID/schedstat; an exited thread or process counts no more); None where there is no such
    file (not Linux)."""
    total, seen = 0, False
    for pid in pids:
        tasks = f"{proc}/{pid}/task"
        try:
            tids = os.listdir(tasks)
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"{tasks}/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
                seen = True
            except (OSError, ValueError, IndexError):
                continue
    return total / 1e9 if seen else None


def create_loader(dataset: ExtractDataset, workers: int, pin_memory: bool, yield_cpu: bool = False) -> DataLoader:
    """Batches come ready-made from the workers (batch_size=None); pinned for accelerators (torch pins for
    the current accelerator, torch-npu's included). `yield_cpu` (the model runs on these same cores): the
    workers run at the lowest priority, so that they do not take a core from the model's threads in the middle
    of an operation, which stalls the other threads at its barrier (the runner also keeps them waiting during
    each forward pass: ForwardGate)."""
    kwargs = dict(batch_size=None, num_workers=workers, pin_memory=pin_memory)
    if workers > 0:
        kwargs["prefetch_factor"] = 4
        if yield_cpu:
            kwargs["worker_init_fn"] = lower_priority
    return DataLoader(dataset, **kwargs)


def lower_priority(_worker_id: int = 0) -> None:
    """Lowest CPU priority for this process (a DataLoader worker); where the OS has no niceness, nothing."""
    try:
        os.nice(WORKER_NICENESS - os.nice(0))
    except (AttributeError, OSError) as exc:
        log.debug("could not lower the worker's priority: %s", exc)
