"""GPU utilization, memory and temperature through NVML (`pynvml`, from the `nvidia-ml-py` package).

A machine without an NVIDIA driver, or without `pynvml`, is not an error: `GpuStatsReader.available` is False and
`read()` returns no devices, which the metrics report as `sdq_gpu_available 0`.

Which devices: NVML numbers GPUs in PCI order and sees every GPU of the machine, while the worker's CUDA device
(`SDQ_DEVICE=cuda:1`) counts among the devices `CUDA_VISIBLE_DEVICES` lists. The reader takes both (read by the
settings at the entry point) and reports only the worker's GPU, found by UUID where the list names UUIDs
(`GPU-...`, or a `MIG-...` instance), else by index. Each figure is read on its own: a MIG instance, or a board
without a temperature sensor, reports what it has, and the rest is left out rather than emptying the reading.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class GpuStats:
    """One device's figures at one moment (None: this device does not report it)."""

    index: int  # the CUDA index the worker uses (its position among the visible devices)
    name: str
    uuid: str
    utilization_ratio: float | None  # share of the last sample period in which a kernel ran ("GPU utilization")
    memory_used_bytes: int | None
    memory_total_bytes: int | None
    temperature_c: float | None


class GpuStatsReader:
    """Reads the worker's GPU (or every visible one); initializes NVML once, on first use.

    `visible_devices` is `CUDA_VISIBLE_DEVICES` as the worker was started with (None: every device), and
    `device_index` the CUDA index of the worker's device among them (None: all of them). `nvml` replaces the
    `pynvml` module (tests on machines without a driver)."""

    def __init__(
        self, *, visible_devices: str | None = None, device_index: int | None = None, nvml: Any = None
    ) -> None:
        self.visible_devices = visible_devices
        self.device_index = device_index
        self._lock = threading.Lock()
        self._given = nvml
        self._nvml: Any = None
        self._tried = False
        self.reason = ""

    @property
    def available(self) -> bool:
        """Whether NVML answered (an NVIDIA driver and at least one device are present)."""
        return self._init() is not None

    def read(self) -> list[GpuStats]:
        """Stats of the worker's device(s); [] when no GPU is available or NVML cannot find them."""
        nvml = self._init()
        if nvml is None:
            return []
        try:
            handles = self._handles(nvml)
        except Exception as exc:  # NVMLError (a device fell off the bus, a driver reload): report, never raise
            log.warning("finding the GPU(s) to report failed: %s", exc)
            return []
        return [_device_stats(nvml, index, handle) for index, handle in handles]

    def _handles(self, nvml: Any) -> list[tuple[int, Any]]:
        if self.visible_devices is None:
            entries: list[str] = [str(n) for n in range(nvml.nvmlDeviceGetCount())]
        else:
            entries = [entry.strip() for entry in self.visible_devices.split(",") if entry.strip()]
        chosen = list(enumerate(entries))
        if self.device_index is not None:
            chosen = chosen[self.device_index : self.device_index + 1]
        return [(index, _handle(nvml, entry)) for index, entry in chosen]

    def _init(self) -> Any:
        with self._lock:
            if not self._tried:
                self._tried = True
                self._nvml = self._load()
            return self._nvml

    def _load(self) -> Any:
        nvml: Any = self._given
        if nvml is None:
            try:
                import pynvml
            except ImportError:
                self.reason = "pynvml is not installed (pip install nvidia-ml-py)"
                return None
            nvml = pynvml
        try:
            nvml.nvmlInit()
            if nvml.nvmlDeviceGetCount() == 0:
                self.reason = "NVML found no devices"
                return None
        except nvml.NVMLError as exc:
            self.reason = f"no NVIDIA driver or GPU: {exc}"
            return None
        return nvml


def _handle(nvml: Any, entry: str) -> Any:
    """The NVML handle of one `CUDA_VISIBLE_DEVICES` entry: a UUID (or its unique prefix, as CUDA accepts) or an
    index."""
    if entry.startswith(("GPU-", "MIG-")):
        try:
            return nvml.nvmlDeviceGetHandleByUUID(entry)
        except nvml.NVMLError:
            if entry.startswith("MIG-"):
                raise
        matches = [
            handle
            for handle in (nvml.nvmlDeviceGetHandleByIndex(n) for n in range(nvml.nvmlDeviceGetCount()))
            if _text(nvml.nvmlDeviceGetUUID(handle)).startswith(entry)
        ]
        if len(matches) != 1:
            raise nvml.NVMLError(nvml.NVML_ERROR_NOT_FOUND)
        return matches[0]
    return nvml.nvmlDeviceGetHandleByIndex(int(entry))


def _device_stats(nvml: Any, index: int, handle: Any) -> GpuStats:
    def field(read: Callable[[], T]) -> T | None:
        try:
            return read()
        except nvml.NVMLError as exc:  # NOT_SUPPORTED on MIG instances and some boards: leave this figure out
            log.debug("NVML: %s", exc)
            return None

    utilization = field(lambda: nvml.nvmlDeviceGetUtilizationRates(handle))
    memory = field(lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
    temperature = field(lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
    return GpuStats(
        index=index,
        name=_text(field(lambda: nvml.nvmlDeviceGetName(handle)) or "unknown"),
        uuid=_text(field(lambda: nvml.nvmlDeviceGetUUID(handle)) or ""),
        utilization_ratio=utilization.gpu / 100.0 if utilization is not None else None,
        memory_used_bytes=int(memory.used) if memory is not None else None,
        memory_total_bytes=int(memory.total) if memory is not None else None,
        temperature_c=float(temperature) if temperature is not None else None,
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def cuda_index(device: str) -> int | None:
    """The CUDA index `SDQ_DEVICE` names (`cuda:1` → 1, `cuda`/`auto` → 0), None for a non-CUDA device."""
    if device in ("auto", "cuda"):
        return 0
    kind, _, index = device.partition(":")
    return int(index) if kind == "cuda" and index.isdigit() else None
