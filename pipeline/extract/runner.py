"""The extract stage: shards → device-resident backbone → one feature + one failure Parquet per shard."""

from __future__ import annotations

import functools
import logging
import os
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import torch
from tqdm import tqdm

from pipeline.extract.backbone import Backbone, create_backbone
from pipeline.extract.config import ExtractConfig, rank_from_env
from pipeline.extract.device import configure_threads, is_accelerator, resolve_device, resolve_workers
from pipeline.extract.device_batches import DeviceStage, resolve_decode
from pipeline.extract.loader import (
    Batch,
    ExtractDataset,
    ForwardGate,
    SampleMeta,
    create_loader,
    processes_cpu_seconds,
)
from pipeline.extract.prefetch import HostFeatures, has_streams, to_device_ahead
from pipeline.io.counts import count_samples
from pipeline.io.samples import ShardEnd
from pipeline.io.schema import FAILURE_SCHEMA, META_FIELDS, feature_schema, feature_table, warm_arrow
from pipeline.io.shards import Shard, create_folder_shards, create_shards, is_url, split_by_rank
from pipeline.io.stats import STATS_COLUMNS
from pipeline.layout import OutputRoot
from pipeline.provenance import stamp

log = logging.getLogger(__name__)

BetweenBatches = Callable[[Backbone], None]


@dataclass
class ExtractStats:
    shards: int = 0  # this rank's shards
    skipped: int = 0  # already done before this run
    images_done: int = 0  # images (rows) of the shards already done before this run
    written: int = 0
    failed: list[str] = field(default_factory=list)  # shards left undone (unreadable)
    damaged: list[str] = field(default_factory=list)  # done, but cut off or broken inside (DamagedShard rows)
    images: int = 0
    failures: int = 0
    seconds: float = 0.0
    # Where the wall time went: waiting for the loader's next batch (the first one apart: workers starting),
    # and in the forward pass (on the CPU the pass itself; on an accelerator only the time to queue it).
    first_batch_seconds: float = 0.0
    loader_wait_seconds: float = 0.0
    forward_seconds: float = 0.0
    # CPU time the loader's workers spent (all of them, all their threads): 0 without workers
    loader_cpu_seconds: float = 0.0
    # ... of which while the model's forward pass ran on the same cores (the gate closed; Linux only, else 0)
    loader_cpu_in_forward_seconds: float = 0.0
    # --compile: whether the forward pass ran compiled, the compile's seconds, and why (extract/compiled.py)
    compiled: bool = False
    compile_seconds: float | None = None
    compile_why: str = ""

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    @property
    def loader_wait_share(self) -> float:
        """Fraction of the wall the model waited for the loader after the first batch: near 0 when the model
        is the bound, large when decoding is (more `--workers`, or cores, would help)."""
        return self.loader_wait_seconds / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        damaged = f", {len(self.damaged)} damaged (kept up to the damage)" if self.damaged else ""
        waited = (f"; waited for the loader {self.loader_wait_share:.0%} of the wall "
                  f"(+{self.first_batch_seconds:.1f} s for the first batch)"
                  if self.forward_seconds > 0 else "")  # not measured: Ray's totals
        if self.loader_cpu_seconds > 0 and self.images:
            waited += f", its workers' CPU {self.loader_cpu_seconds / self.images * 1e3:.1f} ms per image"
        images = (f"{self.images} new images, {self.images_done} already done" if self.skipped
                  else f"{self.images} images")
        return (f"{images}, {self.failures} failures, {self.images_per_second:.1f} images/s, "
                f"{self.seconds:.1f} s wall; shards: {self.written} written{damaged}, {self.skipped} already done, "
                f"{len(self.failed)} failed{waited}")


class ShardBuffer:
    """Rows of one shard as they come back from the device, until its end arrives."""

    def __init__(self) -> None:
        self.metas: list[SampleMeta] = []
        self.features: dict[str, list[np.ndarray]] = {}

    def add(self, metas: list[SampleMeta], feats: dict[str, np.ndarray], rows: np.ndarray) -> None:
        self.metas.extend(metas)
        for name, arr in feats.items():
            self.features.setdefault(name, []).append(arr[rows])

    def table(self, schema: pa.Schema) -> pa.Table:
        order = np.argsort([m.index for m in self.metas], kind="stable")
        metas = [self.metas[i] for i in order]
        rows = {name: [getattr(m, name) for m in metas] for name in META_FIELDS}
        kept = [f.name for f in schema if f.name not in rows and pa.types.is_string(f.type)]
        for i, name in enumerate(kept):
            rows[name] = [m.kept[i] for m in metas]
        for i, name in enumerate(n for n in STATS_COLUMNS if n in schema.names):
            rows[name] = [m.stats[i] for m in metas]
        widths = {f.name: f.type.list_size for f in schema if pa.types.is_fixed_size_list(f.type)}
        feats = {name: (np.concatenate(self.features[name])[order] if self.metas
                        else np.zeros((0, width), np.float32)) for name, width in widths.items()}
        return feature_table(schema, rows, feats)


def list_shards(cfg: ExtractConfig) -> list[Shard]:
    if cfg.shards:
        return create_shards(cfg.shards, cfg.image_column, cfg.key_column, cfg.keep_columns)
    return create_folder_shards(cfg.images, cfg.folder_shard_size)


def resolved_inputs(cfg: ExtractConfig) -> dict:
    """The config as written to config.json, local input paths made absolute (export and report re-read
    the inputs from any working directory)."""
    config = cfg.to_json()
    if cfg.images:
        config["images"] = os.path.abspath(cfg.images)
    config["shards"] = [s if is_url(s) else os.path.abspath(s) for s in cfg.shards]
    return config


def run_extract(cfg: ExtractConfig, between_batches: BetweenBatches | None = None) -> ExtractStats:
    """Extract features for every shard of this rank that is not done yet; outputs as in docs/FORMAT.md.

    The rank holds an exclusive lock on OUT while it runs: a second run of the same rank is refused at once.
    `between_batches(backbone)`, if given, is called after each batch's forward pass (the bench measures the
    backbone alone there, inside the run: pipeline/bench/paired.py); its time counts in `stats.seconds`."""
    store = OutputRoot(cfg.out)
    store.prepare()
    with store.lock(cfg.rank):
        return _run_locked(cfg, store, between_batches)


def _run_locked(cfg: ExtractConfig, store: OutputRoot, between_batches: BetweenBatches | None = None) -> ExtractStats:
    _, _, local_rank = rank_from_env()
    device = resolve_device(cfg.device, local_rank)
    threads = configure_threads(device, cfg.threads)
    shards = split_by_rank(list_shards(cfg), cfg.rank, cfg.world_size)
    backbone = create_backbone(cfg, device)
    decode, _ = resolve_decode(cfg, device, backbone.preprocess)
    provenance = stamp({**backbone.provenance(), "decode": decode})
    store.claim(provenance, resolved_inputs(cfg), cfg.rank)
    if cfg.repair:
        store.repair()
    fp = provenance["fingerprint"]
    todo = [s for s in shards if not store.is_done(s.id, fp, s.digest, s.origin, s.files)]
    stats = ExtractStats(shards=len(shards), skipped=len(shards) - len(todo),
                         images_done=rows_done(store, shards, todo))
    workers = resolve_workers(cfg.workers, device)
    log.info("rank %d/%d: %d shards, %d already done, %d to do on %s (%d workers, %d threads); model %s, "
             "weights %s, input %s %s", cfg.rank, cfg.world_size, len(shards), stats.skipped, len(todo), device,
             workers, threads, cfg.model, provenance["weights"]["source"], provenance["input_size"], cfg.resize_mode)
    start = time.perf_counter()
    if todo:
        extract_shards(cfg, backbone, provenance, store, todo, workers, stats, between_batches)
    stats.seconds = time.perf_counter() - start
    store.write_stats({**asdict(stats), "rank": cfg.rank, "world_size": cfg.world_size, "device": str(device),
                       "workers": workers, "threads": threads, "images_per_second": stats.images_per_second})
    log.info("done: %s", stats.summary())
    return stats


def rows_done(store: OutputRoot, shards: list[Shard], todo: list[Shard]) -> int:
    """Images (rows) written by earlier runs for the shards this run skips, from their markers."""
    left = {s.id for s in todo}
    return sum((store.read_marker(s.id) or {}).get("rows", 0) for s in shards if s.id not in left)


def extract_shards(cfg: ExtractConfig, backbone: Backbone, provenance: dict, store: OutputRoot,
                   todo: list[Shard], workers: int, stats: ExtractStats,
                   between_batches: BetweenBatches | None = None) -> None:
    """Read, embed and write `todo` with a model already on its device; counts go into `stats`.

    Used by `run_extract` for all of a rank's shards, and by each Ray actor for one shard at a time."""
    device = backbone.device
    signals = "stats" in cfg.extras  # quality signals, computed in the loader
    store_dtype = torch.float16 if cfg.dtype == "float16" else torch.float32
    parts = shard_parts(len(todo), workers)
    backbone.plan_compile(functools.partial(count_samples, todo))
    workers = min(workers, len(todo) * parts)
    # On a CPU the workers share the model's cores: they run at the lowest priority and decode between forward
    # passes only (ForwardGate); on an accelerator they never wait
    shares_cores = device.type == "cpu"
    gate = ForwardGate() if shares_cores and workers > 0 else None
    decode, decode_why = resolve_decode(cfg, device, backbone.preprocess)
    log.info("decode: %s (%s)", decode, decode_why)
    dataset = ExtractDataset(todo, backbone.preprocess, cfg.batch_size, cfg.max_pixels, cfg.jpeg_draft,
                             cfg.image_key, cfg.keep_columns, signals, parts, gate, device_decode=decode == "device")
    on_device = DeviceStage(dataset, device, signals) if decode == "device" else None
    loader = create_loader(dataset, workers, pin_memory=is_accelerator(device) and device.type != "mps",
                           yield_cpu=shares_cores)
    batches = iter(loader)  # the workers start now, while the rest is set up
    worker_pids = [w.pid for w in getattr(batches, "_workers", ())]  # the DataLoader's worker processes
    warm_arrow()  # while the workers decode the first batch, not in the writer thread during a forward pass
    # The feature files' schema, from the widths of the first batch's features: no forward pass of its own (a
    # dry one is pure overhead); made by a dry pass only when a shard ends before any batch had an image.
    schema: pa.Schema | None = None

    def schema_for(widths: dict[str, int]) -> pa.Schema:
        return feature_schema(provenance, widths, cfg.dtype, cfg.keep_columns, STATS_COLUMNS if signals else ())

    sizes = {s.id: len(s.files) for s in todo if s.url is None}
    folder_total = sum(sizes.values()) if todo[0].url is None else None
    bar = tqdm(total=folder_total or len(todo), unit="img" if folder_total else "shard", dynamic_ncols=True,
               disable=not cfg.progress, desc=f"extract r{cfg.rank}")
    buffers: dict[str, ShardBuffer] = {}
    part_ends: dict[str, list[ShardEnd]] = {}  # ends of the parts of a shard seen so far (parts > 1)
    digests = {s.id: s.digest for s in todo}
    origins = {s.id: s.origin for s in todo}  # stamped at listing: a file changed while read is redone next time
    pending: list[Future] = []
    start = time.perf_counter()
    started_unix = time.time()  # recorded in each marker: the report's throughput starts here
    # On an accelerator the host takes a batch's features one batch later, after the next forward is queued.
    lag = 1 if has_streams(device) else 0
    inflight: deque[tuple[Batch, HostFeatures | None]] = deque()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="write") as writer:

        def finish(batch: Batch, host: HostFeatures | None) -> None:
            nonlocal schema
            if host is not None:
                feats = host.numpy()
                if schema is None:
                    schema = schema_for({name: int(values.shape[1]) for name, values in feats.items()})
                by_shard: dict[str, list[int]] = {}
                for i, meta in enumerate(batch.metas):
                    by_shard.setdefault(meta.shard, []).append(i)
                for shard, rows in by_shard.items():
                    buffers.setdefault(shard, ShardBuffer()).add([batch.metas[i] for i in rows], feats,
                                                                 np.asarray(rows))
                stats.images += len(batch.metas)
                if folder_total:
                    bar.update(len(batch.metas))
            for end in batch.ended:
                if end.parts > 1:
                    seen = part_ends.setdefault(end.shard, [])
                    seen.append(end)
                    if len(seen) < end.parts:
                        continue
                    end = ShardEnd.merge(part_ends.pop(end.shard))
                buffer = buffers.pop(end.shard, ShardBuffer())
                late = on_device.failures_of(end.shard) if on_device is not None else []
                if late:  # JPEGs that failed on the device and on the CPU
                    end.failures = sorted(end.failures + late, key=lambda row: row["index"])
                stats.failures += len(end.failures)
                if folder_total:  # the bar counts every sample, failed ones and unread ones included
                    unread = sizes[end.shard] - end.samples if end.error is not None else 0
                    bar.update(len(end.failures) + unread)
                if end.error is not None:
                    stats.failed.append(end.shard)
                    if not folder_total:
                        bar.update(1)
                    continue
                if end.damage:
                    stats.damaged.append(end.shard)
                if schema is None:
                    schema = schema_for(_feature_widths(backbone, cfg))
                pending.append(writer.submit(_write_shard, store, schema, end, buffer, provenance,
                                             digests[end.shard], started_unix, origins[end.shard]))
                stats.written += 1
                if not folder_total:
                    bar.update(1)
                if cfg.crash_after_shards is not None and stats.written >= cfg.crash_after_shards:
                    _check_writes(pending, wait=True)
                    raise RuntimeError(f"crash_after_shards={cfg.crash_after_shards}: crashing on purpose")
            elapsed = time.perf_counter() - start
            bar.set_postfix(img_s=f"{stats.images / elapsed:.1f}" if elapsed else "-", fail=stats.failures,
                            **({"damaged": len(stats.damaged)} if stats.damaged else {}))

        ahead, first = to_device_ahead(batches, device), True
        while True:
            t0 = time.perf_counter()
            batch = next(ahead, None)
            t1 = time.perf_counter()
            if first:
                stats.first_batch_seconds += t1 - t0
                first = False
            else:
                stats.loader_wait_seconds += t1 - t0
            if batch is None:
                break
            stats.loader_cpu_seconds += batch.cpu_seconds
            _check_writes(pending)
            if on_device is not None:
                on_device(batch)  # its time counts in forward_seconds
            host = None
            if batch.images is not None:
                with gate.closed() if gate is not None else nullcontext():
                    cpu = processes_cpu_seconds(worker_pids) if gate is not None else None
                    host = HostFeatures(backbone(batch.images), store_dtype)
                    if cpu is not None:
                        after = processes_cpu_seconds(worker_pids)  # a worker that exited meanwhile: less
                        stats.loader_cpu_in_forward_seconds += max(0.0, (after or cpu) - cpu)
            stats.forward_seconds += time.perf_counter() - t1
            inflight.append((batch, host))
            while len(inflight) > lag:
                finish(*inflight.popleft())
            if between_batches is not None and batch.images is not None:
                between_batches(backbone)
        while inflight:
            finish(*inflight.popleft())
        _check_writes(pending, wait=True)
    bar.close()
    compiled = backbone.compiled
    stats.compiled, stats.compile_seconds, stats.compile_why = (compiled.is_compiled, compiled.compile_seconds,
                                                                compiled.why)
    if buffers or part_ends:  # every image belongs to a shard whose end was seen; anything left is a bug
        raise RuntimeError(f"internal error: rows of shards {sorted(set(buffers) | set(part_ends))} never saw "
                           f"their shard end")
    if stats.failed:
        log.error("%d shards could not be read and are left undone (rerun to retry): %s", len(stats.failed),
                  ", ".join(stats.failed[:10]))


def shard_parts(shards: int, workers: int) -> int:
    """Parts each shard is split into so that every loader worker has work: 1 when there are at least as many
    shards as workers, else ceil(workers / shards) (a folder under 1,000 images is one shard: without parts it
    would be decoded by one worker while the others idle)."""
    return 1 if shards >= workers or shards == 0 else -(-workers // shards)


def _feature_widths(backbone: Backbone, cfg: ExtractConfig) -> dict[str, int]:
    """Feature column widths from one dry forward pass (exact for any backbone and extras): for a run whose
    first shard ends before any image got through."""
    size = backbone.preprocess.output_size(*backbone.preprocess.input_size[1:][::-1])
    probe = torch.zeros((1, 3, size[1], size[0]), dtype=torch.uint8, device=backbone.device)
    return {name: int(t.shape[1]) for name, t in backbone(probe).items()}


def _write_shard(store: OutputRoot, schema: pa.Schema, end: ShardEnd, buffer: ShardBuffer,
                 provenance: dict, digest: str | None, run_started: float | None = None,
                 origin: dict | None = None) -> None:
    table = buffer.table(schema)
    failures = list(end.failures)
    if table.num_rows + len(failures) != end.samples:
        raise RuntimeError(f"internal error: shard {end.shard} had {end.samples} samples but {table.num_rows} "
                           f"rows + {len(failures)} failures")
    if end.damage:
        failures.append({"key": "", "shard": end.shard, "index": -1, "stage": "read", "reason": "DamagedShard",
                         "detail": end.damage})
    marker = {
        "shard": end.shard,
        "fingerprint": provenance["fingerprint"],
        "digest": digest,
        "origin": origin,
        "samples": end.samples,
        "rows": table.num_rows,
        "failures": len(end.failures),
        "failures_by_reason": dict(Counter(f["reason"] for f in end.failures)),  # samples; damage is below
        "damage": end.damage,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "finished_unix": time.time(),
        "run_started_unix": run_started,
    }
    store.write_shard(end.shard, table, pa.Table.from_pylist(failures, schema=FAILURE_SCHEMA), marker)


def _check_writes(pending: list[Future], wait: bool = False) -> None:
    """Raise a failed write at once; drop finished futures."""
    for fut in list(pending):
        if wait or fut.done():
            fut.result()
            pending.remove(fut)
