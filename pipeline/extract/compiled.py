"""`--compile auto`: compile the forward pass only when the images left repay the compile time on this machine."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from pipeline.extract.config import COMPILE_MODES
from pipeline.io.files import write_text_atomic

log = logging.getLogger(__name__)

# Warm batches of one shape timed eager (after an untimed first one), then as many compiled: the speed-up this
# machine gets, recorded in the ledger for the next run's decision.
MEASURE_BATCHES = 2


@dataclass(frozen=True)
class CompileCosts:
    """What compiling costs and gives for one model on one device: the numbers `--compile auto` weighs."""

    compile_seconds: float  # the first compiled call, compile included, minus an eager call's time
    speedup: float  # compiled images/s over eager images/s, same batch
    source: str  # where the numbers come from, for the log


# Until this machine has measured its own (the ledger), defaults by device type and precision for a 12-block ViT,
# from benchmarks/results/compile.json; a deeper model compiles for longer in proportion. Accelerators: assumed
# (no measurement yet), conservative, replaced by the ledger after the first compiled run.
DEFAULT_COSTS = {
    ("cpu", "bf16"): CompileCosts(32.0, 1.10, "the default for a CPU in bf16"),
    ("cpu", "fp32"): CompileCosts(28.0, 1.05, "the default for a CPU in fp32"),
}
ASSUMED_COSTS = CompileCosts(60.0, 1.30, "assumed for this device type (not measured yet)")
REFERENCE_DEPTH = 12
# A compile whose graphs are in the cache, over the first one (measured: a CPU, the 12-block ViT, bf16).
CACHED_SHARE = 0.15


def cache_dir() -> Path:
    """The user's cache for compiled graphs and the ledger: $DINOCURATE_CACHE, else $XDG_CACHE_HOME/dinocurate
    (~/.cache/dinocurate)."""
    if os.environ.get("DINOCURATE_CACHE"):
        return Path(os.environ["DINOCURATE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dinocurate"


def inductor_cache() -> Path:
    """Where compiled graphs are cached: $TORCHINDUCTOR_CACHE_DIR, else under the user's cache."""
    return Path(os.environ.get("TORCHINDUCTOR_CACHE_DIR") or cache_dir() / "inductor")


def use_compile_cache() -> Path:
    """Inductor's cache under the user's cache (unless TORCHINDUCTOR_CACHE_DIR says otherwise), not /tmp: later
    runs, after a reboot too, compile from it in seconds."""
    path = inductor_cache()
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    return path


class Ledger:
    """Measured compile costs per (device, model, precision, batch shape, torch): one JSON file, written
    atomically; a broken or missing file is an empty ledger."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or cache_dir() / "compile.json"

    def read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def get(self, key: str, default: CompileCosts) -> CompileCosts:
        """The costs this machine measured for `key`, `default`'s where it measured none. After one compile the
        graphs are in the compile cache: the next one is predicted at CACHED_SHARE of it (while the cache is
        there); after two, the last one measured. A `--compile on` run times no eager pass: no speed-up."""
        entry = self.read().get(key)
        if not isinstance(entry, dict):
            return default
        try:
            seconds, runs = float(entry["compile_seconds"]), int(entry["runs"])
            speedup = float(entry.get("speedup", default.speedup))
        except (KeyError, TypeError, ValueError):
            return default
        cached = runs == 1 and inductor_cache().is_dir()
        seconds = seconds * CACHED_SHARE if cached else seconds
        speed = "speed-up measured" if "speedup" in entry else f"speed-up {default.source}"
        return CompileCosts(seconds, speedup, f"{runs} compile{'s' if runs > 1 else ''} measured on this machine"
                                              f"{', now cached' if cached else ''}; {speed}")

    def record(self, key: str, compile_seconds: float, speedup: float | None, eager_ips: float | None) -> None:
        data = self.read()
        old = data.get(key) if isinstance(data.get(key), dict) else {}
        data[key] = {
            "compile_seconds": round(compile_seconds, 2),
            "first_compile_seconds": old.get("first_compile_seconds", round(compile_seconds, 2)),
            "speedup": round(speedup, 3) if speedup else old.get("speedup"),
            "eager_images_per_second": round(eager_ips, 2) if eager_ips else old.get("eager_images_per_second"),
            "runs": int(old.get("runs", 0)) + 1,
            "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        if data[key]["speedup"] is None:
            data[key].pop("speedup")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(json.dumps(data, indent=1, sort_keys=True) + "\n", self.path)
        except OSError as exc:  # a read-only home: the next run decides from the defaults again
            log.warning("could not record the compile costs in %s: %s", self.path, exc)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    if device.type == "cpu":
        return f"cpu:{os.cpu_count()}:{torch.backends.cpu.get_cpu_capability()}"
    return device.type


def worth_compiling(left: int, eager_ips: float, costs: CompileCosts) -> bool:
    """The images left take less time compiled, compile included: left/eager × (1 − 1/speedup) > compile."""
    return costs.speedup > 1 and left / eager_ips * (1 - 1 / costs.speedup) > costs.compile_seconds


def break_even(eager_ips: float, costs: CompileCosts) -> float:
    """Images after which compiling has paid for itself (inf when it never does)."""
    if costs.speedup <= 1:
        return float("inf")
    return costs.compile_seconds * eager_ips / (1 - 1 / costs.speedup)


class CompiledForward:
    """The model's forward_features, eager or compiled as `mode` decides; one batch shape (the first full one)
    is compiled, others (a run's last, smaller batch) stay eager so nothing compiles twice.

    auto: the first batches of that shape run eager and are timed; then, with the images left (`plan`), the
    costs from the ledger (else the defaults) decide; a compiled run's measured costs go into the ledger.
    A compile error falls back to eager with the reason logged; `why` says what was decided and why."""

    def __init__(self, forward: Callable, mode: str, device: torch.device, key: str, depth: int | None,
                 precision: str, not_possible: str | None = None, ledger: Ledger | None = None) -> None:
        if mode not in COMPILE_MODES:
            raise ValueError(f"compile mode must be one of {COMPILE_MODES}, got {mode!r}")
        self.forward, self.mode, self.device, self.key = forward, mode, device, key
        self.ledger = ledger or Ledger()
        default = DEFAULT_COSTS.get((device.type, precision), ASSUMED_COSTS)
        scale = max(1.0, (depth or REFERENCE_DEPTH) / REFERENCE_DEPTH)
        self.default = CompileCosts(default.compile_seconds * scale, default.speedup, default.source)
        self.count: Callable[[int], int | None] | None = None
        self.seen = 0
        self.shape: tuple | None = None
        self.eager: list[tuple[int, float]] = []  # (images, seconds) of warm eager batches of `shape`
        self.fast: list[tuple[int, float]] = []  # the same, compiled
        self.compiled: Callable | None = None
        self.compile_seconds: float | None = None
        self.eager_calls = 0  # eager calls of `shape` while measuring; the first warms up, untimed
        # auto waits for `plan` (the runner's; a backbone used on its own stays eager)
        self.state = "eager" if mode != "on" or not_possible else "compile"
        self.not_possible = not_possible
        self._why = ("--compile off" if mode == "off" else
                    f"not compiled: {not_possible}" if not_possible else "pending")
        if not_possible and mode == "on":
            log.warning("--compile on ignored: %s", not_possible)

    @property
    def why(self) -> str:
        """What was decided and why (`pending` before a run's plan; a run too short to time says so)."""
        if self.state == "measure":
            return (f"not compiled: the run ended after {self.seen} images, before {MEASURE_BATCHES + 1} batches of "
                    f"one size had timed the eager pass")
        return self._why

    @property
    def is_compiled(self) -> bool:
        return self.compiled is not None

    @property
    def ledger_key(self) -> str:
        return f"{self.key}|batch {'x'.join(str(n) for n in self.shape or ())}"

    def plan(self, count: Callable[[int], int | None]) -> None:
        """How to count the images this run embeds: `count(enough)` gives their number, or any number >= enough
        once it is reached (counting may stop there), or None when only reading the input would tell. Called
        once auto has timed the eager pass, so a run that will not compile never counts; auto starts measuring."""
        self.count = count
        if self.mode == "auto" and not self.not_possible and self.state == "eager" and self.shape is None:
            self.state = "measure"
        elif self.not_possible and self.mode == "auto":
            log.info("--compile auto: %s", self._why)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += len(x)
        if self.shape is None and self.state != "eager":
            self.shape = tuple(x.shape)
        if self.state == "eager" or tuple(x.shape) != self.shape:
            return self.forward(x)
        if self.state == "measure":
            return self._measure_eager(x)
        if self.state == "compile":
            return self._compile(x)
        if len(self.fast) < MEASURE_BATCHES:
            out, seconds = self._timed(self.compiled, x)
            self.fast.append((len(x), seconds))
            if len(self.fast) == MEASURE_BATCHES:
                self._record()
            return out
        return self.compiled(x)

    def _timed(self, fn: Callable, x: torch.Tensor) -> tuple[torch.Tensor, float]:
        self._sync()
        t0 = time.perf_counter()
        out = fn(x)
        self._sync()
        return out, time.perf_counter() - t0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _measure_eager(self, x: torch.Tensor) -> torch.Tensor:
        out, seconds = self._timed(self.forward, x)
        if self.eager_calls > 0:
            self.eager.append((len(x), seconds))
        self.eager_calls += 1
        if len(self.eager) >= MEASURE_BATCHES:
            self._decide()
        return out

    def _decide(self) -> None:
        eager_ips = _rate(self.eager)
        costs = self.ledger.get(self.ledger_key, self.default)
        enough = self.seen + math.ceil(min(break_even(eager_ips, costs), 1e15)) + 1
        total = self.count(enough) if self.count is not None else None
        if total is None:
            self.state, self._why = "eager", ("not compiled: how many images this run holds is not known without "
                                             "reading it (remote or compressed shards); --compile on compiles anyway")
        else:
            left = max(0, total - self.seen)
            pays = worth_compiling(left, eager_ips, costs)
            verdict = "compiling the forward pass" if pays else "not compiled"
            self._why = (f"{verdict}: {left} images left{' or more' if total >= enough else ''} at "
                         f"{eager_ips:.1f} images/s eager; compiling takes ~{costs.compile_seconds:.0f} s and gives "
                         f"x{costs.speedup:.2f} ({costs.source}), which repays after "
                         f"{break_even(eager_ips, costs):.0f} images")
            self.state = "compile" if pays else "eager"
        log.info("--compile auto: %s", self._why)

    def _compile(self, x: torch.Tensor) -> torch.Tensor:
        use_compile_cache()
        try:
            self.compiled = torch.compile(self.forward, dynamic=False)
            out, seconds = self._timed(self.compiled, x)
        except Exception as exc:  # noqa: BLE001 - any compile failure means eager, with the reason logged
            self.compiled, self.state = None, "eager"
            self._why = f"not compiled: torch.compile failed ({type(exc).__name__}: {str(exc)[:200]}); eager"
            log.warning("%s", self._why)
            return self.forward(x)
        eager_batch = len(x) / _rate(self.eager) if self.eager else 0.0
        self.compile_seconds = max(0.0, seconds - eager_batch)
        self.state = "compiled"
        if self.mode == "on":
            self._why = "--compile on"
        log.info("compiled the forward pass in %.1f s", self.compile_seconds)
        return out

    def _record(self) -> None:
        eager_ips = _rate(self.eager) if self.eager else None
        speedup = _rate(self.fast) / eager_ips if eager_ips else None
        if speedup is not None:
            log.info("compiled: x%.2f the eager forward on this batch", speedup)
        self.ledger.record(self.ledger_key, self.compile_seconds or 0.0, speedup, eager_ips)


def _rate(times: list[tuple[int, float]]) -> float:
    images, seconds = sum(n for n, _ in times), sum(s for _, s in times)
    return images / seconds if seconds > 0 else float("inf")
