"""The one device table: the trainer's MFU matches the exact names CUDA reports (so PCIe/NVL parts are not scored
as SXM), and `foundry plan --gpu NAME` reads the same entries."""

from __future__ import annotations

import pytest
import torch

from llmfoundry import devices

# Strings as torch.cuda.get_device_name() returns them on these parts, and the --gpu name of each.
REAL_NAMES = {
    "NVIDIA H100 80GB HBM3": ("h100", 989.4e12),
    "NVIDIA H100 PCIe": ("h100-pcie", 756.5e12),
    "NVIDIA H100 NVL": ("h100-nvl", 835.5e12),
    "NVIDIA H200": ("h200", 989.4e12),
    "NVIDIA H200 NVL": ("h200-nvl", 835.5e12),
    "NVIDIA A100-SXM4-40GB": ("a100-40g", 312e12),
    "NVIDIA A100-SXM4-80GB": ("a100-80g", 312e12),
    "NVIDIA A100-PCIE-40GB": ("a100-40g-pcie", 312e12),
    "NVIDIA A100 80GB PCIe": ("a100-80g-pcie", 312e12),
    "NVIDIA L4": ("l4", 121e12),
    "NVIDIA A10G": ("a10g", 125e12),
    "NVIDIA L40S": ("l40s", 362.05e12),
}


@pytest.mark.parametrize("name", REAL_NAMES)
def test_real_device_names_get_their_own_entry(name):
    gpu, peak = REAL_NAMES[name]
    assert devices.lookup(name) is devices.device(gpu)
    assert devices.lookup(name).bf16_flops == peak


def test_variants_are_not_confused():
    sxm, pcie, nvl = (devices.lookup(n) for n in ("NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA H100 NVL"))
    assert sxm.bf16_flops > nvl.bf16_flops > pcie.bf16_flops
    assert abs(sxm.fp8_flops - 2 * sxm.bf16_flops) < 1e12  # fp8 dense is twice bf16 on Hopper
    assert devices.lookup("NVIDIA A100-SXM4-80GB").fp8_flops is None  # Ampere: no fp8 tensor cores
    assert devices.lookup("NVIDIA A100-SXM4-40GB").memory_bytes == 40 * 2**30
    assert devices.lookup("NVIDIA L4") is not devices.lookup("NVIDIA L40S")
    assert devices.lookup("NVIDIA A10") is not devices.lookup("NVIDIA A10G")


def test_unknown_devices_and_cpus_report_no_peak():
    assert devices.lookup("NVIDIA GeForce RTX 4090") is None
    assert devices.lookup("NVIDIA H100") is None  # not a name CUDA reports: no guessing which H100
    assert devices.lookup("NVIDIA H100 PCIe (custom)") is None  # exact names only, never a substring
    assert devices.peak_flops(torch.device("cpu")) is None
    assert devices.lookup("  nvidia  h100 pcie ") is devices.lookup("NVIDIA H100 PCIe")


def test_every_entry_is_consistent():
    cuda_names = [n for d in devices.DEVICES.values() for n in d.cuda_names]
    assert len(cuda_names) == len(set(cuda_names))  # one part per CUDA name
    for d in devices.DEVICES.values():
        assert d.cuda_names, d.name  # each --gpu part can also be recognized by the trainer
        assert d.fp8_flops is None or d.fp8_flops >= d.bf16_flops
        assert d.memory_bytes >= 24 * 2**30 and d.interconnect_bytes_per_s >= 64e9


def test_unknown_gpu_name_is_a_user_error():
    from llmfoundry.errors import UserError

    with pytest.raises(UserError, match=r"--gpu: got 'h10', expected one of b200, .* \(did you mean 'h100'\?\)"):
        devices.device("h10")
