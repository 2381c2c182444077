"""Extraction on a Ray cluster: one actor per accelerator (or per N CPUs) holds the model; shards are tasks."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, replace

from pipeline.extract.config import ExtractConfig
from pipeline.extract.runner import ExtractStats, list_shards, resolved_inputs, rows_done
from pipeline.layout import OutputRoot
from pipeline.tasks import ensure_ray, run_on_actors

log = logging.getLogger(__name__)


def _actor_class():
    import ray

    @ray.remote
    class ExtractActor:
        """Builds the backbone once on its device; `run(shard)` extracts one shard like a local run."""

        def __init__(self, cfg: ExtractConfig, crash_after: int | None = None) -> None:
            from pipeline.extract.backbone import create_backbone
            from pipeline.extract.device import configure_threads, resolve_device

            gpus = ray.get_gpu_ids()
            device = resolve_device(cfg.device if not gpus else "auto", 0)
            configure_threads(device, cfg.threads)
            self.cfg, self.crash_after, self.done = cfg, crash_after, 0
            self.backbone = create_backbone(cfg, device)
            self.provenance = self.backbone.provenance()
            self.store = OutputRoot(cfg.out)

        def provenance_record(self) -> dict:
            return self.provenance

        def run(self, shard) -> dict:
            from pipeline.extract.runner import extract_shards

            if self.crash_after is not None and self.done >= self.crash_after:
                os._exit(1)  # test hook: this actor's process dies mid-run, as on a node loss
            stats = ExtractStats(shards=1)
            if self.store.is_done(shard.id, self.provenance["fingerprint"], shard.digest, shard.origin):
                stats.skipped = 1  # an earlier attempt finished it: never write a shard twice
            else:
                extract_shards(self.cfg, self.backbone, self.provenance, self.store, [shard],
                               self.cfg.workers or 0, stats)
            self.done += 1
            return asdict(stats)

    return ExtractActor


def run_extract_ray(cfg: ExtractConfig, actors: int | None = None, cpus_per_actor: float = 1.0,
                    max_retries: int = 2, crash_first_actor_after: int | None = None) -> ExtractStats:
    """Same outputs, markers and fingerprint checks as `run_extract`, so either executor resumes the other.

    Connects to RAY_ADDRESS when set, else starts a local cluster. A shard whose actor dies (or whose task
    raises) goes back to the queue for another actor, at most `max_retries` more times.
    """
    store = OutputRoot(cfg.out)
    store.prepare()
    with store.lock(0):
        return _run_ray_locked(cfg, store, actors, cpus_per_actor, max_retries, crash_first_actor_after)


def _run_ray_locked(cfg: ExtractConfig, store: OutputRoot, actors: int | None, cpus_per_actor: float,
                    max_retries: int, crash_first_actor_after: int | None) -> ExtractStats:
    ray = ensure_ray()
    gpus = int(ray.cluster_resources().get("GPU", 0))
    n_actors = actors or (gpus if gpus else max(1, int(ray.cluster_resources().get("CPU", 1) // cpus_per_actor)))
    options = {"num_gpus": 1, "num_cpus": cpus_per_actor} if gpus else {"num_cpus": cpus_per_actor}
    actor_cls = _actor_class()
    cfg = replace(cfg, progress=False)
    first = actor_cls.options(**options).remote(cfg, crash_first_actor_after)
    provenance = ray.get(first.provenance_record.remote())
    store.claim(provenance, resolved_inputs(cfg))
    if cfg.repair:
        store.repair()
    shards = list_shards(cfg)
    todo = [s for s in shards if not store.is_done(s.id, provenance["fingerprint"], s.digest, s.origin, s.files)]
    stats = ExtractStats(shards=len(shards), skipped=len(shards) - len(todo),
                         images_done=rows_done(store, shards, todo))
    log.info("ray: %d shards, %d already done, %d to do on %d actors (%s)", len(shards), stats.skipped,
             len(todo), n_actors, "1 GPU each" if gpus else f"{cpus_per_actor} CPU each")
    start = time.perf_counter()

    def new_actor(_first: bool):
        return actor_cls.options(**options).remote(cfg, None)

    results, failed = run_on_actors(new_actor, todo, n_actors, max_retries, item_id=lambda s: f"shard {s.id}",
                                    started=[first])
    for result in results:
        stats.written += result["written"]
        stats.skipped += result["skipped"]
        stats.images += result["images"]
        stats.failures += result["failures"]
        stats.failed += result["failed"]
    stats.failed += [s.id for s in failed]
    stats.seconds = time.perf_counter() - start
    store.write_stats({**asdict(stats), "executor": "ray", "actors": n_actors,
                       "images_per_second": stats.images_per_second})
    log.info("ray done: %s", stats.summary())
    return stats
