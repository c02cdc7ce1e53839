"""Accelerator specs for `foundry plan`: dense peak FLOP/s, memory and interconnect per GPU, as plain data.

This must become the ONE device table of the project: the trainer's MFU (`llmfoundry/train/loop.py`'s
PEAK_FLOPS, being moved to `llmfoundry/train/devices.py`) should read its peaks from here, so that a plan's
predicted tokens/s at an MFU and the MFU a run logs use the same denominator. `cuda_names` are the substrings
of `torch.cuda.get_device_name()` that identify each part (most specific first where names overlap: an
"H100 PCIe" must not match the SXM entry).

Peaks are NVIDIA's / AMD's datasheet dense (not 2:4-sparse) tensor-core numbers; `fp8` is None where the
part has no FP8 tensor cores. Interconnect is the per-GPU GPU-to-GPU bandwidth (NVLink / Infinity Fabric, or
PCIe where that is all the part has), in bytes per second, one direction plus the other (the datasheet figure).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from llmfoundry.errors import UserError

TFLOPS = 1e12
GB = 1e9  # datasheets count memory and bandwidth in powers of ten


@dataclass(frozen=True)
class DeviceSpec:
    name: str
    """The `--gpu` name."""
    description: str
    """What the part is, for the plan's header."""
    bf16_flops: float
    """Dense BF16 tensor-core peak, FLOP/s (the MFU denominator for amp_bf16 / amp_fp16)."""
    fp8_flops: float | None
    """Dense FP8 tensor-core peak, FLOP/s (None: no FP8)."""
    memory_bytes: float
    """Device memory, bytes."""
    interconnect_bytes_per_s: float
    """GPU-to-GPU bandwidth per GPU (NVLink / Infinity Fabric; PCIe when there is no such link), bytes/s."""
    interconnect: str
    """The link's name."""
    cuda_names: tuple[str, ...]
    """Substrings of torch.cuda.get_device_name() naming this part."""


DEVICES: dict[str, DeviceSpec] = {d.name: d for d in (
    DeviceSpec("b200", "NVIDIA B200 (HGX, 180 GB HBM3e)", 2250 * TFLOPS, 4500 * TFLOPS, 180 * GB, 1800 * GB,
               "NVLink 5", ("B200",)),
    DeviceSpec("h200", "NVIDIA H200 SXM (141 GB HBM3e)", 989.4 * TFLOPS, 1978.9 * TFLOPS, 141 * GB, 900 * GB,
               "NVLink 4", ("H200",)),
    DeviceSpec("h100", "NVIDIA H100 SXM (80 GB HBM3)", 989.4 * TFLOPS, 1978.9 * TFLOPS, 80 * GB, 900 * GB,
               "NVLink 4", ("H100 80GB HBM3", "H100 SXM")),
    DeviceSpec("h100-pcie", "NVIDIA H100 PCIe (80 GB HBM2e)", 756.5 * TFLOPS, 1513 * TFLOPS, 80 * GB, 128 * GB,
               "PCIe Gen5 x16", ("H100 PCIe",)),
    DeviceSpec("a100-80g", "NVIDIA A100 SXM (80 GB HBM2e)", 312 * TFLOPS, None, 80 * GB, 600 * GB, "NVLink 3",
               ("A100-SXM4-80GB", "A100 80GB", "A100-PCIE-80GB")),
    DeviceSpec("a100-40g", "NVIDIA A100 SXM (40 GB HBM2)", 312 * TFLOPS, None, 40 * GB, 600 * GB, "NVLink 3",
               ("A100-SXM4-40GB", "A100-PCIE-40GB", "A100")),
    DeviceSpec("mi300x", "AMD Instinct MI300X (192 GB HBM3)", 1307.4 * TFLOPS, 2614.9 * TFLOPS, 192 * GB, 896 * GB,
               "Infinity Fabric", ("MI300X",)),
    DeviceSpec("l40s", "NVIDIA L40S (48 GB GDDR6)", 362.05 * TFLOPS, 733 * TFLOPS, 48 * GB, 64 * GB, "PCIe Gen4 x16",
               ("L40S",)),
    DeviceSpec("l4", "NVIDIA L4 (24 GB GDDR6)", 121 * TFLOPS, 242.5 * TFLOPS, 24 * GB, 64 * GB, "PCIe Gen4 x16",
               ("L4",)),
    DeviceSpec("a10g", "NVIDIA A10G (AWS G5; 24 GB GDDR6; the A10 datasheet's peak)", 125 * TFLOPS, None, 24 * GB,
               64 * GB, "PCIe Gen4 x16", ("A10G",)),
)}


def device(name: str) -> DeviceSpec:
    """The spec called `name`; an unknown name is a user error listing the known ones."""
    if name in DEVICES:
        return DEVICES[name]
    close = difflib.get_close_matches(name.lower(), list(DEVICES), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise UserError(f"--gpu: got {name!r}, expected one of {', '.join(DEVICES)}{hint}")


def device_for_cuda_name(cuda_name: str) -> DeviceSpec | None:
    """The spec whose `cuda_names` occur in `torch.cuda.get_device_name()`, most specific match first."""
    matches = [(len(sub), spec) for spec in DEVICES.values() for sub in spec.cuda_names if sub in cuda_name]
    return max(matches, key=lambda m: m[0])[1] if matches else None
