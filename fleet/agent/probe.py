"""What a node has (discovery) and how it is doing (samples): NVML for GPUs, psutil for the host.

``GpuProbe`` takes the NVML module as an argument so tests can hand it a test double; in
production it is ``pynvml`` from nvidia-ml-py. Without NVML (no driver, no GPU) the node is a CPU
node: discovery says why and sampling returns no GPUs.
"""

from __future__ import annotations

import logging
import os
import platform
import socket
from collections.abc import Callable
from types import ModuleType
from typing import Any

import psutil

log = logging.getLogger(__name__)

# Clock event ("throttle") reason bits from nvml.h; names as the UI shows them.
THROTTLE_REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
NVLINK_MAX_LINKS = 18


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def load_nvml() -> ModuleType | None:
    try:
        import pynvml  # nvidia-ml-py
    except ImportError:
        return None
    return pynvml


class GpuProbe:
    def __init__(self, nvml: Any = None) -> None:
        self.nvml = nvml
        self.error = ""  # why there is no NVML, for a CPU node
        self.handles: list[Any] = []
        self._events: Any = None
        self._xid: dict[int, int] = {}  # Xid errors per GPU since the agent started
        self.uuids: list[Any] = []
        if nvml is None:
            self.error = "nvidia-ml-py is not installed"
            return
        try:
            nvml.nvmlInit()
            count = nvml.nvmlDeviceGetCount()
        except nvml.NVMLError as exc:  # no driver/library: a CPU node, not an error
            self.error = str(exc) or type(exc).__name__
            self.nvml = None
            return
        for index in range(count):  # one lost GPU must not hide the healthy ones
            try:
                self.handles.append(nvml.nvmlDeviceGetHandleByIndex(index))
            except nvml.NVMLError as exc:
                log.warning("GPU %s: no handle: %s", index, exc)
                self.handles.append(None)
        self.uuids = [self._opt(nvml.nvmlDeviceGetUUID, h) if h is not None else None for h in self.handles]
        self._watch_xid()

    @property
    def available(self) -> bool:
        return self.nvml is not None

    def _opt(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A reading some GPUs lack (ECC, NVLink, MIG...): None when NVML says it is unavailable."""
        try:
            return fn(*args)
        except self.nvml.NVMLError:
            return None

    # --- discovery -------------------------------------------------------------------------
    def discover(self) -> dict:
        if not self.available:
            return {"driver_version": "", "cuda_version": "", "gpus": [], "nvml_error": self.error}
        n = self.nvml
        cuda = self._opt(n.nvmlSystemGetCudaDriverVersion)
        gpus, bus_to_index = [], {}
        for index, handle in enumerate(self.handles):
            pci = self._opt(n.nvmlDeviceGetPciInfo, handle) if handle is not None else None
            if pci is not None:
                bus_to_index[_text(pci.busId).lower()] = index
        for index, handle in enumerate(self.handles):
            if handle is None:
                gpus.append({"index": index, "error": "no NVML handle for this GPU"})
                continue
            try:
                gpus.append(self._describe(index, handle, bus_to_index))
            except n.NVMLError as exc:
                log.warning("GPU %s: discovery failed: %s", index, exc)
                gpus.append({"index": index, "error": str(exc)})
        return {
            "driver_version": _text(self._opt(n.nvmlSystemGetDriverVersion) or ""),
            "cuda_version": f"{cuda // 1000}.{cuda % 1000 // 10}" if cuda else "",
            "gpus": gpus,
            "nvml_error": "",
        }

    def _describe(self, index: int, handle: Any, bus_to_index: dict[str, int]) -> dict:
        n = self.nvml
        cc = self._opt(n.nvmlDeviceGetCudaComputeCapability, handle)
        mig = self._opt(n.nvmlDeviceGetMigMode, handle)
        return {
            "index": index,
            "uuid": _text(n.nvmlDeviceGetUUID(handle)),
            "name": _text(n.nvmlDeviceGetName(handle)),
            "memory_total": int(n.nvmlDeviceGetMemoryInfo(handle).total),
            "compute_capability": f"{cc[0]}.{cc[1]}" if cc else "",
            "mig_mode": bool(mig[0]) if mig else None,
            "pcie_gen": self._opt(n.nvmlDeviceGetCurrPcieLinkGeneration, handle),
            "pcie_width": self._opt(n.nvmlDeviceGetCurrPcieLinkWidth, handle),
            "nvlink_peers": self._nvlink_peers(handle, bus_to_index),
        }

    def _nvlink_peers(self, handle: Any, bus_to_index: dict[str, int]) -> list[int]:
        n, peers = self.nvml, set()
        for link in range(NVLINK_MAX_LINKS):
            state = self._opt(n.nvmlDeviceGetNvLinkState, handle, link)
            if state is None:  # no such link (or no NVLink at all): stop asking
                break
            if state:
                remote = self._opt(n.nvmlDeviceGetNvLinkRemotePciInfo, handle, link)
                peer = bus_to_index.get(_text(remote.busId).lower()) if remote is not None else None
                if peer is not None:
                    peers.add(peer)
        return sorted(peers)

    # --- sampling --------------------------------------------------------------------------
    def _watch_xid(self) -> None:
        n = self.nvml
        try:
            self._events = n.nvmlEventSetCreate()
            for handle in filter(None, self.handles):
                self._opt(n.nvmlDeviceRegisterEvents, handle, n.nvmlEventTypeXidCriticalError, self._events)
        except (n.NVMLError, AttributeError):
            self._events = None

    def _drain_xid(self) -> None:
        """Add the Xid errors pending since the last tick to the running totals (non-blocking)."""
        if self._events is None:
            return
        n = self.nvml
        for _ in range(100):
            try:
                event = n.nvmlEventSetWait_v2(self._events, 0)
            except n.NVMLError:  # NVML_ERROR_TIMEOUT: nothing pending
                return
            uuid = self._opt(n.nvmlDeviceGetUUID, event.device)
            if uuid is not None and uuid in self.uuids:
                index = self.uuids.index(uuid)
                self._xid[index] = self._xid.get(index, 0) + 1

    def sample(self) -> tuple[list[dict], list[dict]]:
        """(readings, errors): one reading per GPU that answered; an error per GPU that did not."""
        if not self.available:
            return [], []
        self._drain_xid()
        readings, errors = [], []
        for index, handle in enumerate(self.handles):
            if handle is None:
                errors.append({"i": index, "error": "no NVML handle for this GPU"})
                continue
            try:
                readings.append(self._read(index, handle))
            except self.nvml.NVMLError as exc:  # drop this GPU's reading only
                errors.append({"i": index, "error": str(exc) or type(exc).__name__})
        return readings, errors

    def _read(self, index: int, handle: Any) -> dict:
        n = self.nvml
        memory = n.nvmlDeviceGetMemoryInfo(handle)
        power = self._opt(n.nvmlDeviceGetPowerUsage, handle)
        limit = self._opt(n.nvmlDeviceGetEnforcedPowerLimit, handle)
        reasons_fn = (
            getattr(n, "nvmlDeviceGetCurrentClocksEventReasons", None) or n.nvmlDeviceGetCurrentClocksThrottleReasons
        )
        reasons = self._opt(reasons_fn, handle)
        return {
            "i": index,
            "util": n.nvmlDeviceGetUtilizationRates(handle).gpu,
            "mem_used": int(memory.used),
            "mem_total": int(memory.total),
            "temp": n.nvmlDeviceGetTemperature(handle, n.NVML_TEMPERATURE_GPU),
            "power": round(power / 1000, 1) if power is not None else None,
            "power_limit": round(limit / 1000, 1) if limit is not None else None,
            "sm_clock": self._opt(n.nvmlDeviceGetClockInfo, handle, n.NVML_CLOCK_SM),
            "ecc": self._opt(
                n.nvmlDeviceGetTotalEccErrors, handle, n.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, n.NVML_VOLATILE_ECC
            ),
            "xid": self._xid.get(index, 0) if self._events is not None else None,
            "throttle": [name for bit, name in THROTTLE_REASONS.items() if reasons and reasons & bit],
        }


class HostProbe:
    def __init__(self) -> None:
        psutil.cpu_percent(None)  # prime: the first call has nothing to compare against

    @staticmethod
    def _cpu_model() -> str:
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as f:
                for line in f:
                    if line.startswith("model name"):
                        return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return platform.processor() or platform.machine()

    def discover(self) -> dict:
        return {
            "hostname": socket.gethostname(),
            "os": f"{platform.system()} {platform.release()} ({platform.platform(terse=True)})",
            "cpu_model": self._cpu_model(),
            "cpu_cores": psutil.cpu_count(logical=True) or 0,
            "ram_bytes": psutil.virtual_memory().total,
        }

    def sample(self) -> dict:
        memory = psutil.virtual_memory()
        return {
            "cpu": psutil.cpu_percent(None),
            "ram_used": memory.total - memory.available,
            "ram_total": memory.total,
            "load1": round(os.getloadavg()[0], 2),
        }
