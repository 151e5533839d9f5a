"""GPU utilization, memory and temperature through NVML (`pynvml`, from the `nvidia-ml-py` package).

A machine without an NVIDIA driver, or without `pynvml`, is not an error: `GpuStatsReader.available` is False and
`read()` returns no devices, which the metrics report as `sdq_gpu_available 0`.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from types import ModuleType

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuStats:
    """One device's figures at one moment."""

    index: int
    name: str
    utilization_ratio: float  # share of the last sample period in which a kernel ran (NVML's "GPU utilization")
    memory_used_bytes: int
    memory_total_bytes: int
    temperature_c: float


class GpuStatsReader:
    """Reads every NVIDIA device's stats; initializes NVML once, on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._nvml: ModuleType | None = None
        self._tried = False
        self.reason = ""

    @property
    def available(self) -> bool:
        """Whether NVML answered (an NVIDIA driver and at least one device are present)."""
        return self._init() is not None

    def read(self) -> list[GpuStats]:
        """Stats of every device; [] when no GPU is available or NVML fails mid-read."""
        nvml = self._init()
        if nvml is None:
            return []
        try:
            return [_device_stats(nvml, index) for index in range(nvml.nvmlDeviceGetCount())]
        except Exception as exc:  # NVMLError (a device fell off the bus, a driver reload): report, never raise
            log.warning("reading GPU stats failed: %s", exc)
            return []

    def _init(self) -> ModuleType | None:
        with self._lock:
            if not self._tried:
                self._tried = True
                self._nvml = self._load()
            return self._nvml

    def _load(self) -> ModuleType | None:
        try:
            import pynvml
        except ImportError:
            self.reason = "pynvml is not installed (pip install nvidia-ml-py)"
            return None
        try:
            pynvml.nvmlInit()
            if pynvml.nvmlDeviceGetCount() == 0:
                self.reason = "NVML found no devices"
                return None
        except pynvml.NVMLError as exc:
            self.reason = f"no NVIDIA driver or GPU: {exc}"
            return None
        return pynvml


def _device_stats(nvml: ModuleType, index: int) -> GpuStats:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    name = nvml.nvmlDeviceGetName(handle)
    utilization = nvml.nvmlDeviceGetUtilizationRates(handle)
    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
    temperature = nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)
    return GpuStats(
        index=index,
        name=name.decode() if isinstance(name, bytes) else str(name),
        utilization_ratio=utilization.gpu / 100.0,
        memory_used_bytes=int(memory.used),
        memory_total_bytes=int(memory.total),
        temperature_c=float(temperature),
    )
