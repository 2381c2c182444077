"""`make curate --balanced --plan`: the hierarchy the job would cluster and the memory it needs here."""

from __future__ import annotations

from pipeline.curate.config import CurateConfig
from pipeline.curate.hkmeans import resolve_plan
from pipeline.errors import ConfigError
from pipeline.index.plan import GIB, predict
from pipeline.index.planner import PlanReport, report, this_machine, workload_for
from pipeline.roots.features import open_features


def plan_balanced(cfg: CurateConfig) -> PlanReport:
    """The job's own levels (`resolve_plan`) and whether its vectors are held or streamed (its memory budget)."""
    if cfg.balanced is None:
        raise ConfigError("--plan covers --balanced curation: give --balanced TARGET_SIZE")
    fs = open_features(cfg.pool, cfg.keys)
    levels = resolve_plan(fs.count, cfg.levels, cfg.levels_k, cfg.resample_steps, cfg.resample_size)
    machine = this_machine()
    w = workload_for(fs, cfg.feature, "Flat", machine, curate_leaf_k=levels.ks[0],
                     curate_budget_bytes=cfg.memory_budget_gb * GIB)
    plan = predict(w)
    head = (f"make curate --balanced {cfg.balanced:,}: {fs.count:,} × {w.dim} ({cfg.feature}) from {fs.root}; "
            f"levels {list(levels.ks)} (finest first), resampling steps {list(levels.steps)}")
    advice = []
    stage = plan.stages["balanced"]
    if stage.peak_bytes > machine.available_bytes:
        advice.append(f"a --memory-budget below {w.n * w.dim * 2 / GIB:.1f} GiB streams the vectors from the "
                      f"feature files on every pass instead of holding them")
    return report(head, plan, ("balanced",), machine, advice)
