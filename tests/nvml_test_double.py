"""A test double of the ``pynvml`` module (nvidia-ml-py), standing in for NVML hardware.

This machine has no NVIDIA driver, so the tests hand ``GpuProbe`` an ``NvmlTestDouble`` instead
of ``pynvml``. It implements only what ``fleet/agent/probe.py`` calls, with the signatures and
return shapes of real nvidia-ml-py:

* device handles are opaque objects from ``nvmlDeviceGetHandleByIndex``;
* structures are objects with the real field names (``.total/.free/.used``, ``.gpu/.memory``,
  ``.busId``, event ``.device/.eventType/.eventData``);
* power is in milliwatts, ``nvmlSystemGetCudaDriverVersion`` is an int such as 12040,
  ``nvmlDeviceGetCudaComputeCapability`` is ``(major, minor)``, ``nvmlDeviceGetMigMode`` is
  ``[current, pending]``;
* failures are ``NVMLError`` subclasses whose ``str()`` is NVML's message, and
  ``nvmlEventSetWait_v2`` raises ``NVMLError_Timeout`` when no event is pending;
* strings are ``str`` (nvidia-ml-py >= 11.515); ``bytes_strings=True`` gives ``bytes`` as older
  releases did.

Knobs: ``gpus`` (count), ``nvlink`` (GPU 0 <-> GPU 1), ``ecc_supported``, ``fail(function, gpu)``,
``fail_init()``, ``inject_xid(gpu)``; the simulated readings live in ``double.gpus[i]`` and can be
changed between samples.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

# Return codes and the messages nvmlErrorString gives for them.
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_UNKNOWN = 999
_MESSAGES = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_TIMEOUT: "Timeout",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
    NVML_ERROR_UNKNOWN: "Unknown Error",
}


class NVMLError(Exception):
    """Like pynvml.NVMLError: ``.value`` is the NVML return code, ``str()`` its message."""

    code = NVML_ERROR_UNKNOWN

    def __init__(self, value: int | None = None) -> None:
        self.value = self.code if value is None else value
        super().__init__(self.value)

    def __str__(self) -> str:
        return _MESSAGES.get(self.value, f"NVML Error with code {self.value}")


class NVMLError_Uninitialized(NVMLError):  # noqa: N801 - pynvml's names
    code = NVML_ERROR_UNINITIALIZED


class NVMLError_InvalidArgument(NVMLError):  # noqa: N801
    code = NVML_ERROR_INVALID_ARGUMENT


class NVMLError_NotSupported(NVMLError):  # noqa: N801
    code = NVML_ERROR_NOT_SUPPORTED


class NVMLError_Timeout(NVMLError):  # noqa: N801
    code = NVML_ERROR_TIMEOUT


class NVMLError_LibraryNotFound(NVMLError):  # noqa: N801
    code = NVML_ERROR_LIBRARY_NOT_FOUND


class NVMLError_GpuIsLost(NVMLError):  # noqa: N801
    code = NVML_ERROR_GPU_IS_LOST


# --- the structures NVML returns (same field names as the ctypes structs) ---------------------
@dataclass(frozen=True)
class Memory:  # c_nvmlMemory_t, bytes
    total: int
    free: int
    used: int


@dataclass(frozen=True)
class Utilization:  # c_nvmlUtilization_t, percent
    gpu: int
    memory: int


@dataclass(frozen=True)
class PciInfo:  # nvmlPciInfo_t (only the field the probe reads)
    busId: str | bytes  # noqa: N815


@dataclass(frozen=True, eq=False)
class DeviceHandle:  # c_nvmlDevice_t: opaque; compare by identity, as pointers
    _index: int


@dataclass(frozen=True)
class EventData:  # c_nvmlEventData_t
    device: DeviceHandle
    eventType: int  # noqa: N815
    eventData: int  # noqa: N815 - the Xid
    gpuInstanceId: int = 0xFFFFFFFF  # noqa: N815
    computeInstanceId: int = 0xFFFFFFFF  # noqa: N815


@dataclass(eq=False)
class EventSet:  # c_nvmlEventSet_t
    registered: dict[int, int] = field(default_factory=dict)  # gpu index -> event type mask
    pending: deque[EventData] = field(default_factory=deque)


@dataclass
class SimulatedGpu:
    """The readings one simulated GPU gives; change them between samples as needed."""

    uuid: str
    bus_id: str  # NVML's upper-case form, e.g. "00000000:18:00.0"
    name: str = "NVIDIA H100 80GB HBM3"
    memory_total: int = 85_520_809_984  # 81559 MiB
    memory_used: int = 0
    util: int = 0
    util_memory: int = 0
    temp: int = 30
    power_mw: int = 70_000
    power_limit_mw: int = 700_000
    sm_clock: int = 1980
    ecc_uncorrected: int = 0
    compute_capability: tuple[int, int] = (9, 0)
    mig_mode: tuple[int, int] = (0, 0)  # (current, pending)
    pcie_gen: int = 5
    pcie_width: int = 16
    clocks_event_reasons: int = 0  # the nvmlClocksEventReason* bit mask


class NvmlTestDouble:
    """Stands in for the ``pynvml`` module: pass an instance to ``GpuProbe``."""

    NVMLError = NVMLError
    NVMLError_NotSupported = NVMLError_NotSupported
    NVMLError_Timeout = NVMLError_Timeout
    NVMLError_LibraryNotFound = NVMLError_LibraryNotFound
    NVMLError_GpuIsLost = NVMLError_GpuIsLost
    NVMLError_InvalidArgument = NVMLError_InvalidArgument
    NVMLError_Uninitialized = NVMLError_Uninitialized

    NVML_TEMPERATURE_GPU = 0
    NVML_CLOCK_SM = 1
    NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
    NVML_VOLATILE_ECC = 0
    NVML_FEATURE_DISABLED = 0
    NVML_FEATURE_ENABLED = 1
    NVML_NVLINK_MAX_LINKS = 18
    nvmlEventTypeXidCriticalError = 0x8

    NVLINK_LINKS_PER_PEER = 4  # links 0..3 of GPU 0 go to GPU 1 and back; the others are down

    def __init__(
        self,
        gpus: int = 2,
        *,
        nvlink: bool = True,
        ecc_supported: bool = True,
        bytes_strings: bool = False,
        driver_version: str = "550.54.15",
        cuda_driver_version: int = 12040,
    ) -> None:
        self.gpus = [
            SimulatedGpu(
                uuid=f"GPU-{i:08x}-5a1e-4c0d-9e2b-0000000000{i:02x}", bus_id=f"00000000:{0x18 + 0x12 * i:02X}:00.0"
            )
            for i in range(gpus)
        ]
        self.nvlink = nvlink and gpus >= 2
        self.ecc_supported = ecc_supported
        self.bytes_strings = bytes_strings
        self.driver_version = driver_version
        self.cuda_driver_version = cuda_driver_version
        self.initialized = False
        self._init_error: NVMLError | None = None
        self._failures: dict[tuple[str, int], NVMLError] = {}
        self._handles = [DeviceHandle(i) for i in range(gpus)]
        self._event_sets: list[EventSet] = []

    # --- knobs ---------------------------------------------------------------------------------
    def fail(self, function: str, gpu: int, error: NVMLError | None = None) -> None:
        """Make ``function`` raise ``error`` (default: GPU is lost) whenever it is asked about ``gpu``."""
        if not callable(getattr(self, function, None)) or not function.startswith("nvml"):
            raise AttributeError(f"the test double has no NVML function {function!r}")
        self._failures[(function, gpu)] = error or NVMLError_GpuIsLost()

    def fail_init(self, error: NVMLError | None = None) -> None:
        """Make ``nvmlInit`` raise (default: the NVML shared library is not found: a CPU node)."""
        self._init_error = error or NVMLError_LibraryNotFound()

    def inject_xid(self, gpu: int, xid: int = 79, count: int = 1) -> None:
        """Queue ``count`` Xid critical-error events for ``gpu`` on every event set watching it."""
        for event_set in self._event_sets:
            if event_set.registered.get(gpu, 0) & self.nvmlEventTypeXidCriticalError:
                for _ in range(count):
                    event_set.pending.append(EventData(self._handles[gpu], self.nvmlEventTypeXidCriticalError, xid))

    # --- helpers -------------------------------------------------------------------------------
    def _s(self, value: str) -> str | bytes:
        return value.encode() if self.bytes_strings else value

    def _check(self, function: str, gpu: int | None = None) -> None:
        if not self.initialized:
            raise NVMLError_Uninitialized()
        if gpu is not None and (function, gpu) in self._failures:
            raise self._failures[(function, gpu)]

    def _gpu(self, function: str, handle: DeviceHandle) -> SimulatedGpu:
        if not isinstance(handle, DeviceHandle) or handle not in self._handles:
            raise NVMLError_InvalidArgument()
        self._check(function, handle._index)
        return self.gpus[handle._index]

    # --- system --------------------------------------------------------------------------------
    def nvmlInit(self) -> None:
        if self._init_error is not None:
            raise self._init_error
        self.initialized = True

    def nvmlSystemGetDriverVersion(self) -> str | bytes:
        self._check("nvmlSystemGetDriverVersion")
        return self._s(self.driver_version)

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        self._check("nvmlSystemGetCudaDriverVersion")
        return self.cuda_driver_version

    def nvmlDeviceGetCount(self) -> int:
        self._check("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> DeviceHandle:
        if not 0 <= index < len(self.gpus):
            raise NVMLError_InvalidArgument()
        self._check("nvmlDeviceGetHandleByIndex", index)
        return self._handles[index]

    # --- identity and topology -----------------------------------------------------------------
    def nvmlDeviceGetUUID(self, handle: DeviceHandle) -> str | bytes:
        return self._s(self._gpu("nvmlDeviceGetUUID", handle).uuid)

    def nvmlDeviceGetName(self, handle: DeviceHandle) -> str | bytes:
        return self._s(self._gpu("nvmlDeviceGetName", handle).name)

    def nvmlDeviceGetPciInfo(self, handle: DeviceHandle) -> PciInfo:
        return PciInfo(self._s(self._gpu("nvmlDeviceGetPciInfo", handle).bus_id))

    def nvmlDeviceGetCudaComputeCapability(self, handle: DeviceHandle) -> tuple[int, int]:
        return self._gpu("nvmlDeviceGetCudaComputeCapability", handle).compute_capability

    def nvmlDeviceGetMigMode(self, device: DeviceHandle) -> list[int]:
        return list(self._gpu("nvmlDeviceGetMigMode", device).mig_mode)

    def nvmlDeviceGetCurrPcieLinkGeneration(self, handle: DeviceHandle) -> int:
        return self._gpu("nvmlDeviceGetCurrPcieLinkGeneration", handle).pcie_gen

    def nvmlDeviceGetCurrPcieLinkWidth(self, handle: DeviceHandle) -> int:
        return self._gpu("nvmlDeviceGetCurrPcieLinkWidth", handle).pcie_width

    def _peer(self, function: str, device: DeviceHandle, link: int) -> int | None:
        """The GPU index at the other end of an active link, None for a link that is down."""
        self._gpu(function, device)
        if not self.nvlink or device._index > 1:
            raise NVMLError_NotSupported()
        if not 0 <= link < self.NVML_NVLINK_MAX_LINKS:
            raise NVMLError_InvalidArgument()
        return 1 - device._index if link < self.NVLINK_LINKS_PER_PEER else None

    def nvmlDeviceGetNvLinkState(self, device: DeviceHandle, link: int) -> int:
        peer = self._peer("nvmlDeviceGetNvLinkState", device, link)
        return self.NVML_FEATURE_DISABLED if peer is None else self.NVML_FEATURE_ENABLED

    def nvmlDeviceGetNvLinkRemotePciInfo(self, device: DeviceHandle, link: int) -> PciInfo:
        peer = self._peer("nvmlDeviceGetNvLinkRemotePciInfo", device, link)
        if peer is None:
            raise NVMLError_NotSupported()  # nothing at the far end of a link that is down
        return PciInfo(self._s(self.gpus[peer].bus_id))

    # --- readings ------------------------------------------------------------------------------
    def nvmlDeviceGetMemoryInfo(self, handle: DeviceHandle, version: int | None = None) -> Memory:
        gpu = self._gpu("nvmlDeviceGetMemoryInfo", handle)
        return Memory(total=gpu.memory_total, free=gpu.memory_total - gpu.memory_used, used=gpu.memory_used)

    def nvmlDeviceGetUtilizationRates(self, handle: DeviceHandle) -> Utilization:
        gpu = self._gpu("nvmlDeviceGetUtilizationRates", handle)
        return Utilization(gpu=gpu.util, memory=gpu.util_memory)

    def nvmlDeviceGetTemperature(self, handle: DeviceHandle, sensor: int) -> int:
        gpu = self._gpu("nvmlDeviceGetTemperature", handle)
        if sensor != self.NVML_TEMPERATURE_GPU:
            raise NVMLError_InvalidArgument()
        return gpu.temp

    def nvmlDeviceGetPowerUsage(self, handle: DeviceHandle) -> int:
        return self._gpu("nvmlDeviceGetPowerUsage", handle).power_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: DeviceHandle) -> int:
        return self._gpu("nvmlDeviceGetEnforcedPowerLimit", handle).power_limit_mw

    def nvmlDeviceGetClockInfo(self, handle: DeviceHandle, type: int) -> int:  # noqa: A002 - pynvml's name
        gpu = self._gpu("nvmlDeviceGetClockInfo", handle)
        if type != self.NVML_CLOCK_SM:
            raise NVMLError_NotSupported()  # only the SM clock is simulated
        return gpu.sm_clock

    def nvmlDeviceGetTotalEccErrors(self, handle: DeviceHandle, errorType: int, counterType: int) -> int:  # noqa: N803
        gpu = self._gpu("nvmlDeviceGetTotalEccErrors", handle)
        if not self.ecc_supported:
            raise NVMLError_NotSupported()
        return gpu.ecc_uncorrected

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: DeviceHandle) -> int:
        return self._gpu("nvmlDeviceGetCurrentClocksEventReasons", handle).clocks_event_reasons

    # --- events --------------------------------------------------------------------------------
    def nvmlEventSetCreate(self) -> EventSet:
        self._check("nvmlEventSetCreate")
        event_set = EventSet()
        self._event_sets.append(event_set)
        return event_set

    def nvmlDeviceRegisterEvents(self, handle: DeviceHandle, eventTypes: int, eventSet: EventSet) -> None:  # noqa: N803
        self._gpu("nvmlDeviceRegisterEvents", handle)
        eventSet.registered[handle._index] = eventSet.registered.get(handle._index, 0) | eventTypes

    def nvmlEventSetWait_v2(self, eventSet: EventSet, timeoutms: int) -> EventData:  # noqa: N803
        """The next pending event; ``NVMLError_Timeout`` when there is none (it never blocks)."""
        self._check("nvmlEventSetWait_v2")
        if not eventSet.pending:
            raise NVMLError_Timeout()
        return eventSet.pending.popleft()
