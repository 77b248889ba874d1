"""Device and precision choice, and autocast: shared by training and inference."""

from __future__ import annotations

import contextlib

import torch

from seqtool import distributed
from seqtool.errors import ConfigError


def pick_device(name: str) -> torch.device:
    """The device to run on; under torchrun each process takes the GPU of its local rank."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", distributed.local_rank())
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps: no MPS device is available")
    if name == "cuda":
        return torch.device("cuda", distributed.local_rank())
    return torch.device(name)


def pick_precision(name: str, device: torch.device) -> str:
    """auto: bf16 where the hardware runs it natively (measured ~2x on CPUs with
    avx512_bf16, see BENCHMARKS.md), fp16 on older GPUs, fp32 otherwise."""
    if name == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if device.type == "cpu" and _cpu_has_bf16():
            return "bf16"
        return "fp32"
    if name == "fp16" and device.type != "cuda":
        raise ConfigError("--precision fp16 needs a CUDA device; use bf16 or fp32")
    return name


def _cpu_has_bf16() -> bool:
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)
