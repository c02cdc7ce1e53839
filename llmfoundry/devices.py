"""The one accelerator table: dense peak FLOP/s, memory and interconnect per part, as plain data.

Both the trainer's MFU (`peak_flops`) and `foundry plan --gpu NAME` (`device`) read it, so a plan's tokens/s
at an MFU m predicts a run that logs `throughput/mfu` = m against the same denominator.

A running GPU is matched on `torch.cuda.get_device_name()` EXACTLY (case and spaces normalized), never by
substring: an "H100 PCIe" (756 TFLOP/s bf16) or "H100 NVL" (835) scored against the SXM part's 989 would
under-report MFU by up to a quarter. An unknown name gives no peak, so no MFU is logged rather than a made-up
one. MFU uses the bf16 peak for every precision (as torchtitan and LLM Foundry do), so amp_fp8 shows up as a
higher MFU; `fp8_flops` is for planning.

Peaks are the vendors' datasheet dense tensor-core numbers (the sheets' 2:4-sparsity figures halved); `fp8_flops`
is None where the part has no FP8 tensor cores. Memory is the card's nominal capacity in GiB (HBM/GDDR stacks
are sized in powers of two: an "80GB" H100 reports about 79.6 GiB to CUDA). Interconnect is the per-GPU
GPU-to-GPU bandwidth, both directions summed as the sheets quote it: NVLink / Infinity Fabric, or PCIe where that
is all the part has (the PCIe cards' optional NVLink bridges are not assumed).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import torch

from llmfoundry.errors import UserError

TFLOPS = 1e12
GIB = 2**30
GB = 1e9  # link bandwidths are quoted in powers of ten


@dataclass(frozen=True)
class Device:
    name: str
    """The `--gpu` name."""
    description: str
    """What the part is, for the plan's header."""
    bf16_flops: float
    """Dense BF16 tensor-core peak, FLOP/s (the MFU denominator for every precision)."""
    fp8_flops: float | None
    """Dense FP8 tensor-core peak, FLOP/s (None: no FP8 tensor cores)."""
    memory_bytes: float
    """Device memory, bytes."""
    interconnect_bytes_per_s: float
    """GPU-to-GPU bandwidth per GPU, bytes/s."""
    interconnect: str
    """The link's name."""
    cuda_names: tuple[str, ...] = ()
    """The exact strings torch.cuda.get_device_name() returns for this part."""


def _gpu(name: str, description: str, bf16_tflops: float, fp8_tflops: float | None, memory_gib: float,
         link_gb_per_s: float, link: str, *cuda_names: str) -> Device:
    return Device(name, description, bf16_tflops * TFLOPS, None if fp8_tflops is None else fp8_tflops * TFLOPS,
                  memory_gib * GIB, link_gb_per_s * GB, link, cuda_names)


DEVICES: dict[str, Device] = {d.name: d for d in (
    _gpu("b200", "NVIDIA B200 (HGX, 180 GB HBM3e)", 2250, 4500, 180, 1800, "NVLink 5", "NVIDIA B200"),
    _gpu("h200", "NVIDIA H200 SXM (141 GB HBM3e)", 989.4, 1978.9, 141, 900, "NVLink 4", "NVIDIA H200"),
    _gpu("h200-nvl", "NVIDIA H200 NVL (141 GB HBM3e)", 835.5, 1670.5, 141, 900, "NVLink 4 bridge",
         "NVIDIA H200 NVL"),
    _gpu("gh200", "NVIDIA GH200 Grace Hopper (96 GB HBM3)", 989.4, 1978.9, 96, 900, "NVLink 4",
         "NVIDIA GH200 480GB"),
    _gpu("h100", "NVIDIA H100 SXM (80 GB HBM3)", 989.4, 1978.9, 80, 900, "NVLink 4",
         "NVIDIA H100 80GB HBM3", "NVIDIA H100 SXM5 80GB"),
    _gpu("h100-nvl", "NVIDIA H100 NVL (94 GB HBM3)", 835.5, 1670.5, 94, 600, "NVLink 4 bridge", "NVIDIA H100 NVL"),
    _gpu("h100-pcie", "NVIDIA H100 PCIe (80 GB HBM2e)", 756.5, 1513, 80, 128, "PCIe Gen5 x16", "NVIDIA H100 PCIe"),
    _gpu("h800", "NVIDIA H800 SXM (80 GB HBM3)", 989.4, 1978.9, 80, 400, "NVLink 4", "NVIDIA H800"),
    _gpu("a100-80g", "NVIDIA A100 SXM (80 GB HBM2e)", 312, None, 80, 600, "NVLink 3", "NVIDIA A100-SXM4-80GB"),
    _gpu("a100-40g", "NVIDIA A100 SXM (40 GB HBM2)", 312, None, 40, 600, "NVLink 3", "NVIDIA A100-SXM4-40GB"),
    _gpu("a100-80g-pcie", "NVIDIA A100 PCIe (80 GB HBM2e)", 312, None, 80, 64, "PCIe Gen4 x16",
         "NVIDIA A100 80GB PCIe"),
    _gpu("a100-40g-pcie", "NVIDIA A100 PCIe (40 GB HBM2)", 312, None, 40, 64, "PCIe Gen4 x16",
         "NVIDIA A100-PCIE-40GB"),
    _gpu("mi300x", "AMD Instinct MI300X (192 GB HBM3)", 1307.4, 2614.9, 192, 896, "Infinity Fabric",
         "AMD Instinct MI300X"),
    _gpu("l40s", "NVIDIA L40S (48 GB GDDR6)", 362.05, 733, 48, 64, "PCIe Gen4 x16", "NVIDIA L40S"),
    _gpu("l4", "NVIDIA L4 (24 GB GDDR6)", 121, 242.5, 24, 64, "PCIe Gen4 x16", "NVIDIA L4"),
    _gpu("a10", "NVIDIA A10 (24 GB GDDR6)", 125, None, 24, 64, "PCIe Gen4 x16", "NVIDIA A10"),
    # AWS's A10 variant: no datasheet of its own, so the A10's peak.
    _gpu("a10g", "NVIDIA A10G (AWS G5; 24 GB GDDR6; the A10 datasheet's peak)", 125, None, 24, 64, "PCIe Gen4 x16",
         "NVIDIA A10G"),
)}


def _normalize(name: str) -> str:
    return " ".join(name.lower().split())


_BY_CUDA_NAME: dict[str, Device] = {_normalize(n): d for d in DEVICES.values() for n in d.cuda_names}


def device(name: str) -> Device:
    """The part called `name` on the command line (`--gpu`); an unknown name is a user error listing the known."""
    if name in DEVICES:
        return DEVICES[name]
    close = difflib.get_close_matches(name.lower(), list(DEVICES), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise UserError(f"--gpu: got {name!r}, expected one of {', '.join(DEVICES)}{hint}")


def lookup(cuda_name: str) -> Device | None:
    """The part `torch.cuda.get_device_name()` calls `cuda_name`, or None when we do not know it."""
    return _BY_CUDA_NAME.get(_normalize(cuda_name))


def peak_flops(dev: torch.device) -> float | None:
    """Dense bf16 peak FLOP/s of `dev` for MFU; None for CPUs and unknown accelerators."""
    if dev.type != "cuda":
        return None
    known = lookup(torch.cuda.get_device_name(dev))
    return known.bf16_flops if known is not None else None
