"""Accelerators we know: dense (no 2:4 sparsity) tensor-core peaks and memory, by the exact name CUDA reports.

Matched on `torch.cuda.get_device_name()` exactly (case and spaces normalized), never by substring: an
"H100 PCIe" (756 TFLOP/s bf16) or "H100 NVL" (835) scored against the SXM part's 989 would under-report MFU
by up to a quarter. An unknown name gives no peak, so no MFU is logged rather than a made-up one.
Values are NVIDIA's datasheet numbers halved where the sheet quotes sparsity. MFU uses the bf16 peak for
every precision (as torchtitan and LLM Foundry do), so amp_fp8 shows up as a higher MFU; `fp8` is for
planning. `memory_gib` is what the card reports, for a memory planner.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Device:
    label: str
    bf16: float
    """Dense bf16 tensor-core FLOP/s."""
    fp8: float | None
    """Dense fp8 tensor-core FLOP/s (None: no fp8 tensor cores)."""
    memory_gib: float


_H100_SXM = Device("H100 SXM", 989.4e12, 1978.9e12, 80)
_H100_PCIE = Device("H100 PCIe", 756.0e12, 1513.0e12, 80)
_H100_NVL = Device("H100 NVL", 835.5e12, 1670.5e12, 94)
_H200_SXM = Device("H200 SXM", 989.4e12, 1978.9e12, 141)
_H200_NVL = Device("H200 NVL", 835.5e12, 1670.5e12, 141)
_A100_40_SXM = Device("A100 40GB SXM", 312e12, None, 40)
_A100_80_SXM = Device("A100 80GB SXM", 312e12, None, 80)
_A100_40_PCIE = Device("A100 40GB PCIe", 312e12, None, 40)
_A100_80_PCIE = Device("A100 80GB PCIe", 312e12, None, 80)

# Keys: the strings torch.cuda.get_device_name() returns for these parts (normalized by _normalize).
DEVICES: dict[str, Device] = {
    "nvidia h100 80gb hbm3": _H100_SXM,
    "nvidia h100 sxm5 80gb": _H100_SXM,
    "nvidia h100 pcie": _H100_PCIE,
    "nvidia h100 nvl": _H100_NVL,
    "nvidia h800": Device("H800 SXM", 989.4e12, 1978.9e12, 80),
    "nvidia h200": _H200_SXM,
    "nvidia h200 nvl": _H200_NVL,
    "nvidia gh200 480gb": Device("GH200", 989.4e12, 1978.9e12, 96),
    "nvidia b200": Device("B200", 2250e12, 4500e12, 180),
    "nvidia a100-sxm4-40gb": _A100_40_SXM,
    "nvidia a100-sxm4-80gb": _A100_80_SXM,
    "nvidia a100-pcie-40gb": _A100_40_PCIE,
    "nvidia a100 80gb pcie": _A100_80_PCIE,
    "nvidia l40s": Device("L40S", 362.05e12, 733e12, 48),
    "nvidia l4": Device("L4", 121e12, 242.5e12, 24),
    "nvidia a10": Device("A10", 125e12, None, 24),
    "nvidia a10g": Device("A10G", 125e12, None, 24),  # AWS's A10 variant: no separate datasheet, A10's value
}


def _normalize(name: str) -> str:
    return " ".join(name.lower().split())


def lookup(name: str) -> Device | None:
    """The device called `name` (as torch.cuda.get_device_name() spells it), or None when we do not know it."""
    return DEVICES.get(_normalize(name))


def device_of(device: torch.device) -> Device | None:
    if device.type != "cuda":
        return None
    return lookup(torch.cuda.get_device_name(device))


def peak_flops(device: torch.device) -> float | None:
    """Dense bf16 peak FLOP/s of `device` for MFU; None for CPUs and unknown accelerators."""
    known = device_of(device)
    return known.bf16 if known is not None else None
