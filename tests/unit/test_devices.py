"""The MFU peak table matches the exact names CUDA reports, so PCIe/NVL parts are not scored as SXM."""

from __future__ import annotations

import pytest
import torch

from llmfoundry.train import devices

# Strings as torch.cuda.get_device_name() returns them on these parts.
REAL_NAMES = {
    "NVIDIA H100 80GB HBM3": 989.4e12,
    "NVIDIA H100 PCIe": 756e12,
    "NVIDIA H100 NVL": 835.5e12,
    "NVIDIA H200": 989.4e12,
    "NVIDIA H200 NVL": 835.5e12,
    "NVIDIA A100-SXM4-40GB": 312e12,
    "NVIDIA A100-SXM4-80GB": 312e12,
    "NVIDIA A100-PCIE-40GB": 312e12,
    "NVIDIA A100 80GB PCIe": 312e12,
    "NVIDIA L4": 121e12,
    "NVIDIA A10G": 125e12,
    "NVIDIA L40S": 362.05e12,
}


@pytest.mark.parametrize("name", REAL_NAMES)
def test_real_device_names_get_their_own_peak(name):
    assert devices.lookup(name).bf16 == REAL_NAMES[name]


def test_variants_are_not_confused():
    sxm, pcie, nvl = (devices.lookup(n) for n in ("NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA H100 NVL"))
    assert sxm.bf16 > nvl.bf16 > pcie.bf16
    assert abs(sxm.fp8 - 2 * sxm.bf16) < 1e12  # fp8 dense is twice bf16 on Hopper
    assert devices.lookup("NVIDIA A100-SXM4-80GB").fp8 is None  # Ampere: no fp8 tensor cores
    assert devices.lookup("NVIDIA A100-SXM4-40GB").memory_gib == 40
    assert devices.lookup("NVIDIA L4").label == "L4" and devices.lookup("NVIDIA L40S").label == "L40S"


def test_unknown_devices_and_cpus_report_no_peak():
    assert devices.lookup("NVIDIA GeForce RTX 4090") is None
    assert devices.lookup("NVIDIA H100") is None  # not a name CUDA reports: no guessing which H100
    assert devices.peak_flops(torch.device("cpu")) is None
    assert devices.lookup("  nvidia  h100 pcie ") is devices.lookup("NVIDIA H100 PCIe")
