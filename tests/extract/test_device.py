"""Device choice (pipeline/extract/device.py) on a machine without accelerators: clear errors, not fallbacks."""

from __future__ import annotations

import os

import pytest
import torch

from pipeline.errors import DeviceError
from pipeline.extract.device import autocast, resolve_device


def test_device_resolution_on_a_cpu_machine():
    assert resolve_device("auto").type in ("cpu", "cuda", "npu", "mps")
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA device"):
            resolve_device("cuda")
    with pytest.raises(DeviceError, match="torch_npu"):
        resolve_device("npu")
    with pytest.raises(ValueError, match="fp16"):
        autocast(torch.device("cpu"), "fp16")


def test_default_workers_fill_every_core_on_a_cpu_and_leave_one_on_an_accelerator():
    from pipeline.extract.device import default_workers, resolve_workers

    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert [default_workers(cpu, n) for n in (1, 2, 4, 8, 64)] == [1, 2, 4, 8, 8]
    assert [default_workers(gpu, n) for n in (1, 2, 4, 9, 64)] == [1, 1, 3, 8, 8]
    assert default_workers(cpu) == min(8, len(os.sched_getaffinity(0)))
    assert resolve_workers(None, cpu) == default_workers(cpu) and resolve_workers(0, cpu) == 0
    assert resolve_workers(3, gpu) == 3
