"""Device choice (pipeline/extract/device.py) on a machine without accelerators: clear errors, not fallbacks."""

from __future__ import annotations

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
