"""Device choice (cuda → npu → mps → cpu), autocast, and loader defaults that suit the device."""

from __future__ import annotations

import contextlib
import logging
import os

import torch

from pipeline.errors import ConfigError, DeviceError

log = logging.getLogger(__name__)

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def npu_available() -> bool:
    """True when torch-npu is installed and sees an Ascend device (importing it registers `torch.npu`)."""
    try:
        import torch_npu  # noqa: F401
    except ImportError:
        return False
    return bool(torch.npu.is_available())


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """`auto` picks cuda, then Ascend npu, then mps, then cpu; LOCAL_RANK picks the accelerator index."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if npu_available():
            return torch.device("npu", local_rank % torch.npu.device_count())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("npu") and not npu_available():  # torch parses "npu" only once torch_npu is imported
        raise DeviceError("--device npu was asked for, but torch_npu is not installed or sees no Ascend "
                           "device: pip install '.[npu]' matching your torch and CANN versions")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda was asked for, but torch sees no CUDA device (is this a CPU build?)")
    if device.type in ("cuda", "npu") and device.index is None:
        device = torch.device(device.type, local_rank)
    return device


def cpu_flags(path: str = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags as the kernel reports them (empty where there is no /proc/cpuinfo)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def resolve_precision(requested: str, device: torch.device, flags: set[str] | None = None) -> tuple[str, str]:
    """(precision, why): `auto` is bf16 autocast where the hardware computes bf16 natively (CUDA GPUs that
    support it; CPUs with AMX-BF16 or AVX512-BF16, read from the kernel's flags) and fp32 elsewhere. A precision
    asked for by name is kept."""
    if requested != "auto":
        return requested, f"--precision {requested} given"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", f"{torch.cuda.get_device_name(device)} supports bf16"
        return "fp32", f"{torch.cuda.get_device_name(device)} has no bf16"
    if device.type == "cpu":
        flags = cpu_flags() if flags is None else flags
        native = [f for f in NATIVE_BF16_FLAGS if f in flags]
        if native and torch.backends.mkldnn.is_available():
            return "bf16", f"the CPU computes bf16 natively ({', '.join(native)})"
        return "fp32", ("the CPU has no native bf16 (no amx_bf16 or avx512_bf16 among its flags)" if not native
                        else "torch was built without oneDNN, which runs bf16 on this CPU")
    return "fp32", f"auto keeps fp32 on {device.type}"


def is_accelerator(device: torch.device) -> bool:
    return device.type in ("cuda", "npu", "mps")


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed precision for the forward pass; fp32 is a no-op context."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = _AUTOCAST_DTYPES[precision]
    if device.type == "cpu" and dtype is torch.float16:
        raise ConfigError("fp16 autocast is not supported on the CPU; use --precision bf16 or fp32")
    return torch.autocast(device_type=device.type, dtype=dtype)


def resolve_workers(requested: int | None, device: torch.device) -> int:
    """The DataLoader workers a run uses: `--workers` when given, else `default_workers`."""
    return requested if requested is not None else default_workers(device)


def default_workers(device: torch.device, cpus: int | None = None) -> int:
    """DataLoader workers (`cpus`: the CPUs this process may use, read when None). Accelerators: one core left
    to the host loop, up to 8. CPU: one per core, up to 8. There the workers run at the lowest priority
    (loader.create_loader) and decode only between forward passes (loader.ForwardGate); when the model waits
    for a batch, every core should be decoding: one worker decodes on one core, so with one worker on two
    cores half the machine idled in every wait (bf16 on 2 cores, 400 photos, rounds alternated in one process:
    end-to-end/backbone 0.68–1.04 with one worker, 0.95–0.99 with two)."""
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if is_accelerator(device):
        return max(1, min(8, cpus - 1))
    return max(1, min(8, cpus))


def configure_threads(device: torch.device, threads: int | None) -> int:
    """Intra-op threads for the model (CPU); returns what torch will use."""
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()
