"""GPU metrics through NVML: which device is reported, and readings a MIG instance cannot give in full.

This machine has no NVIDIA driver, so beside the real "no driver" path the tests give the reader a fake NVML: a
small class with NVML's functions over a table of devices (nothing real can run them here; the `gpu`-marked tests
read the real one).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest

from gpu_worker.gpu_stats import GpuStatsReader, cuda_index


class NVMLError(Exception):
    pass


@dataclass
class FakeDevice:
    uuid: str
    name: str
    supported: frozenset[str] = frozenset({"utilization", "memory", "temperature"})


class FakeNvml:
    """NVML's calls the reader makes, over `devices` in PCI order; unsupported figures raise as NVML does."""

    NVMLError = NVMLError
    NVML_TEMPERATURE_GPU = 0
    NVML_ERROR_NOT_FOUND = 6

    def __init__(self, devices: list[FakeDevice]) -> None:
        self.devices = devices

    def nvmlInit(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeDevice:
        if not 0 <= index < len(self.devices):
            raise NVMLError("invalid argument")
        return self.devices[index]

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> FakeDevice:
        for device in self.devices:
            if device.uuid == uuid:
                return device
        raise NVMLError("not found")

    def nvmlDeviceGetUUID(self, device: FakeDevice) -> str:
        return device.uuid

    def nvmlDeviceGetName(self, device: FakeDevice) -> bytes:
        return device.name.encode()

    def _check(self, device: FakeDevice, figure: str) -> None:
        if figure not in device.supported:
            raise NVMLError("Not Supported")

    def nvmlDeviceGetUtilizationRates(self, device: FakeDevice) -> Any:
        self._check(device, "utilization")
        return SimpleNamespace(gpu=40)

    def nvmlDeviceGetMemoryInfo(self, device: FakeDevice) -> Any:
        self._check(device, "memory")
        return SimpleNamespace(used=1 << 30, total=80 << 30)

    def nvmlDeviceGetTemperature(self, device: FakeDevice, sensor: int) -> int:
        self._check(device, "temperature")
        return 51


MACHINE = [
    FakeDevice("GPU-aaaa1111-0000", "NVIDIA H100"),
    FakeDevice("GPU-bbbb2222-0000", "NVIDIA H100"),
    FakeDevice("GPU-cccc3333-0000", "NVIDIA H100"),
]


def test_without_a_driver_nothing_is_reported_and_the_reason_is_kept() -> None:
    reader = GpuStatsReader()  # the real pynvml on a machine without an NVIDIA driver (or without pynvml)
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert reader.read() == [] and not reader.available
    assert "pynvml is not installed" in reader.reason or "no NVIDIA driver" in reader.reason


def test_every_device_is_read_when_nothing_narrows_it() -> None:
    stats = GpuStatsReader(nvml=FakeNvml(MACHINE)).read()
    assert [(s.index, s.uuid) for s in stats] == [(n, d.uuid) for n, d in enumerate(MACHINE)]
    assert (
        stats[0].utilization_ratio == 0.4 and stats[0].memory_total_bytes == 80 << 30 and stats[0].name == "NVIDIA H100"
    )


@pytest.mark.parametrize(
    ("visible", "device", "expected"),
    [
        ("2,0", "cuda:0", "GPU-cccc3333-0000"),  # cuda:0 is the first visible device, not NVML's device 0
        ("2,0", "cuda:1", "GPU-aaaa1111-0000"),
        ("GPU-bbbb2222-0000", "cuda", "GPU-bbbb2222-0000"),
        ("GPU-cccc,GPU-aaaa", "cuda:1", "GPU-aaaa1111-0000"),  # UUID prefixes, as CUDA accepts them
        (None, "cuda:1", "GPU-bbbb2222-0000"),
    ],
)
def test_the_workers_own_gpu_is_found_among_the_visible_devices(
    visible: str | None, device: str, expected: str
) -> None:
    reader = GpuStatsReader(visible_devices=visible, device_index=cuda_index(device), nvml=FakeNvml(MACHINE))
    [stats] = reader.read()
    assert stats.uuid == expected and stats.index == cuda_index(device)


def test_a_mig_instance_reports_the_figures_it_has() -> None:
    mig = FakeDevice("MIG-dddd4444-0000", "NVIDIA H100 MIG 3g.40gb", frozenset({"memory"}))
    [stats] = GpuStatsReader(visible_devices=mig.uuid, device_index=0, nvml=FakeNvml([*MACHINE, mig])).read()
    assert stats.memory_used_bytes == 1 << 30 and stats.memory_total_bytes == 80 << 30
    assert stats.utilization_ratio is None and stats.temperature_c is None


def test_a_visible_device_nvml_does_not_know_reports_nothing_rather_than_another_gpu() -> None:
    reader = GpuStatsReader(visible_devices="GPU-ffff", device_index=0, nvml=FakeNvml(MACHINE))
    assert reader.read() == []


@pytest.mark.parametrize(("device", "index"), [("auto", 0), ("cuda", 0), ("cuda:3", 3), ("cpu", None), ("mps", None)])
def test_cuda_index_of_a_device_setting(device: str, index: int | None) -> None:
    assert cuda_index(device) == index
