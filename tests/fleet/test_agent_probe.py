"""The node agent's probes (NVML through a test double, psutil for real) and the telemetry message.

No database: ``GpuProbe`` gets ``NvmlTestDouble`` in place of ``pynvml``; ``HostProbe`` reads this
machine; ``telemetry.check`` and ``MinuteRollup`` are pure Python.
"""

from __future__ import annotations

import copy
import math
import time

import pytest

from fleet.agent.instances import InstanceSupervisor, Managed
from fleet.agent.probe import GpuProbe, HostProbe
from fleet.protocol.telemetry import MalformedTelemetry, MinuteRollup, check
from tests.nvml_test_double import NvmlTestDouble

GIB = 1024**3


@pytest.fixture
def nvml() -> NvmlTestDouble:
    """Two H100s joined by NVLink: GPU 0 busy and power-capped, GPU 1 idle and in MIG mode."""
    double = NvmlTestDouble()
    busy, idle = double.gpus
    busy.util, busy.memory_used, busy.temp = 97, 40 * GIB, 61
    busy.power_mw, busy.power_limit_mw, busy.sm_clock = 312_400, 700_000, 1980
    busy.ecc_uncorrected, busy.clocks_event_reasons = 0, 0x4 | 0x20  # sw power cap, sw thermal
    idle.util, idle.memory_used, idle.temp = 12, 1 * GIB, 35
    idle.power_mw, idle.power_limit_mw, idle.sm_clock = 85_149, 650_000, 345
    idle.ecc_uncorrected, idle.clocks_event_reasons = 2, 0x1  # gpu idle
    idle.mig_mode, idle.pcie_gen, idle.pcie_width = (1, 1), 4, 8
    return double


def message(host: dict, gpus: list[dict], errors: list[dict], *, seq: int = 1, ts: float | None = None) -> dict:
    return {
        "v": 1,
        "node": 1,
        "name": "n",
        "ts": time.time() if ts is None else ts,
        "seq": seq,
        "host": host,
        "gpus": gpus,
        "errors": errors,
        "instances": [],
    }


# --- GPU discovery and samples -------------------------------------------------------------------
@pytest.mark.parametrize("bytes_strings", [False, True], ids=["str", "bytes"])
def test_it_discovers_the_gpus_driver_cuda_and_nvlink_peers(nvml, bytes_strings):
    nvml.bytes_strings = bytes_strings  # nvidia-ml-py before 11.515 returned bytes
    probe = GpuProbe(nvml)

    found = probe.discover()

    assert probe.available
    assert found["driver_version"] == "550.54.15"
    assert found["cuda_version"] == "12.4"  # from 12040
    assert found["nvml_error"] == ""
    assert found["gpus"] == [
        {
            "index": 0,
            "uuid": nvml.gpus[0].uuid,
            "name": "NVIDIA H100 80GB HBM3",
            "memory_total": 85_520_809_984,
            "compute_capability": "9.0",
            "mig_mode": False,
            "pcie_gen": 5,
            "pcie_width": 16,
            "nvlink_peers": [1],
        },
        {
            "index": 1,
            "uuid": nvml.gpus[1].uuid,
            "name": "NVIDIA H100 80GB HBM3",
            "memory_total": 85_520_809_984,
            "compute_capability": "9.0",
            "mig_mode": True,
            "pcie_gen": 4,
            "pcie_width": 8,
            "nvlink_peers": [0],
        },
    ]
    assert all(isinstance(gpu["uuid"], str) and gpu["uuid"].startswith("GPU-") for gpu in found["gpus"])


def test_it_finds_no_nvlink_peers_without_nvlink():
    found = GpuProbe(NvmlTestDouble(nvlink=False)).discover()

    assert [gpu["nvlink_peers"] for gpu in found["gpus"]] == [[], []]


def test_it_samples_every_field_of_both_gpus(nvml):
    readings, errors = GpuProbe(nvml).sample()

    assert errors == []
    assert readings == [
        {
            "i": 0,
            "util": 97,
            "mem_used": 40 * GIB,
            "mem_total": 85_520_809_984,
            "temp": 61,
            "power": 312.4,
            "power_limit": 700.0,
            "sm_clock": 1980,
            "ecc": 0,
            "xid": 0,
            "throttle": ["sw_power_cap", "sw_thermal_slowdown"],
        },
        {
            "i": 1,
            "util": 12,
            "mem_used": 1 * GIB,
            "mem_total": 85_520_809_984,
            "temp": 35,
            "power": 85.1,
            "power_limit": 650.0,
            "sm_clock": 345,
            "ecc": 2,
            "xid": 0,
            "throttle": ["gpu_idle"],
        },
    ]


def test_it_drops_only_the_reading_of_the_gpu_whose_nvml_call_fails(nvml):
    probe = GpuProbe(nvml)
    healthy = probe.sample()[0][0]
    nvml.fail("nvmlDeviceGetUtilizationRates", 1)

    readings, errors = probe.sample()

    assert readings == [healthy]
    assert errors == [{"i": 1, "error": "GPU is lost"}]


def test_it_gives_none_for_an_optional_reading_the_gpu_does_not_support(nvml):
    probe = GpuProbe(nvml)
    supported = probe.sample()[0]
    nvml.ecc_supported = False

    readings, errors = probe.sample()

    assert errors == []
    assert [r["ecc"] for r in readings] == [None, None]
    assert readings == [r | {"ecc": None} for r in supported]


def test_it_counts_xid_events_in_the_next_sample(nvml):
    probe = GpuProbe(nvml)
    assert [r["xid"] for r in probe.sample()[0]] == [0, 0]
    nvml.inject_xid(0, xid=79, count=2)

    readings, errors = probe.sample()

    assert errors == []
    assert [r["xid"] for r in readings] == [2, 0]


def test_it_keeps_sampling_the_other_gpus_when_a_gpu_with_an_xid_is_lost(nvml):
    probe = GpuProbe(nvml)
    nvml.inject_xid(1, xid=79)  # "GPU has fallen off the bus": every call about GPU 1 now fails
    nvml.fail("nvmlDeviceGetUUID", 1)
    nvml.fail("nvmlDeviceGetMemoryInfo", 1)

    readings, errors = probe.sample()

    assert [r["i"] for r in readings] == [0]
    assert errors == [{"i": 1, "error": "GPU is lost"}]


def test_it_is_a_cpu_node_when_nvml_does_not_initialise():
    nvml = NvmlTestDouble()
    nvml.fail_init()
    probe = GpuProbe(nvml)

    assert probe.available is False
    assert probe.discover() == {
        "driver_version": "",
        "cuda_version": "",
        "gpus": [],
        "nvml_error": "NVML Shared Library Not Found",
    }
    assert probe.sample() == ([], [])


def test_it_is_a_cpu_node_without_nvidia_ml_py():
    probe = GpuProbe(None)

    assert probe.available is False
    assert probe.discover()["nvml_error"] == "nvidia-ml-py is not installed"
    assert probe.sample() == ([], [])


# --- the host ------------------------------------------------------------------------------------
def test_it_describes_and_samples_the_host():
    probe = HostProbe()

    found, sample = probe.discover(), probe.sample()

    assert found["hostname"] and found["os"] and found["cpu_model"]
    assert found["cpu_cores"] > 0 and found["ram_bytes"] > 0
    assert set(sample) == {"cpu", "ram_used", "ram_total", "load1"}
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in sample.values())
    assert 0 <= sample["cpu"] <= 100 and 0 < sample["ram_used"] <= sample["ram_total"] == found["ram_bytes"]
    assert sample["load1"] >= 0


# --- the telemetry message -----------------------------------------------------------------------
@pytest.fixture
def good_message(nvml) -> dict:
    nvml.fail("nvmlDeviceGetUtilizationRates", 1)  # so that errors is not empty
    readings, errors = GpuProbe(nvml).sample()
    return message(HostProbe().sample(), readings, errors)


def test_it_builds_a_message_that_passes_the_telemetry_check(good_message):
    assert check(good_message) is good_message
    assert len(good_message["gpus"]) == 1 and good_message["errors"] == [{"i": 1, "error": "GPU is lost"}]


def test_it_passes_the_check_for_a_cpu_node_and_for_unsupported_readings():
    nvml = NvmlTestDouble()
    nvml.fail_init()
    cpu_node = message(HostProbe().sample(), *GpuProbe(nvml).sample())
    no_ecc = message(HostProbe().sample(), *GpuProbe(NvmlTestDouble(ecc_supported=False)).sample())

    assert check(cpu_node) is cpu_node
    assert check(no_ecc) is no_ecc


def _set(path: tuple, value):
    def mutate(msg: dict) -> dict:
        target = msg
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return msg

    return mutate


def _drop_gpu_index(msg: dict) -> dict:
    del msg["gpus"][0]["i"]
    return msg


MALFORMED = {
    "not a dict": lambda msg: [msg],
    "wrong version": _set(("v",), 2),
    "node not int": _set(("node",), "1"),
    "node is a bool": _set(("node",), True),
    "NaN number": _set(("gpus", 0, "util"), math.nan),
    "infinite host number": _set(("host", "cpu"), math.inf),
    "string number": _set(("gpus", 0, "power"), "312.4"),
    "gpus not a list": _set(("gpus",), {"0": {}}),
    "gpu without index": _drop_gpu_index,
    "host missing": _set(("host",), None),
    "errors not a list": _set(("errors",), "GPU is lost"),
}


@pytest.mark.parametrize("breaks", MALFORMED.values(), ids=MALFORMED.keys())
def test_it_rejects_a_malformed_message(good_message, breaks):
    with pytest.raises(MalformedTelemetry):
        check(breaks(copy.deepcopy(good_message)))


def test_it_rolls_up_a_minute_into_min_avg_max_per_gpu_and_for_the_host(nvml):
    probe, rollup = GpuProbe(nvml), MinuteRollup(minute=1_764_200_040)
    ticks = [  # (GPU 0 util, power mW, GPU 1 util, host cpu, ram_used, load1)
        (90, 300_000, 10, 10.0, 4 * GIB, 0.5),
        (95, 310_000, 20, 20.0, 5 * GIB, 1.0),
        (100, 320_500, 60, 60.0, 6 * GIB, 1.5),
    ]
    for seq, (util0, power0, util1, cpu, ram, load) in enumerate(ticks, start=1):
        nvml.gpus[0].util, nvml.gpus[0].power_mw, nvml.gpus[1].util = util0, power0, util1
        if seq == 3:
            nvml.fail("nvmlDeviceGetUtilizationRates", 1)  # GPU 1 misses the last tick
        host = {"cpu": cpu, "ram_used": ram, "ram_total": 64 * GIB, "load1": load}
        rollup.add(check(message(host, *probe.sample(), seq=seq, ts=1_764_200_040 + seq)))

    assert rollup.rows() == [
        {
            "gpu": -1,
            "samples": 3,
            "stats": {"cpu": [10.0, 30.0, 60.0], "ram_used": [4 * GIB, 5 * GIB, 6 * GIB], "load1": [0.5, 1.0, 1.5]},
        },
        {
            "gpu": 0,
            "samples": 3,
            "stats": {
                "util": [90, 95.0, 100],
                "mem_used": [40 * GIB, 40 * GIB, 40 * GIB],
                "temp": [61, 61.0, 61],
                "power": [300.0, 310.167, 320.5],
                "sm_clock": [1980, 1980.0, 1980],
            },
        },
        {
            "gpu": 1,
            "samples": 2,
            "stats": {
                "util": [10, 15.0, 20],
                "mem_used": [GIB, GIB, GIB],
                "temp": [35, 35.0, 35],
                "power": [85.1, 85.1, 85.1],
                "sm_clock": [345, 345.0, 345],
            },
        },
    ]


def test_an_instance_log_streams_its_lines_but_not_the_agents_own_metrics_scrapes(tmp_path):
    sent: list[tuple[int, list[str]]] = []
    supervisor = InstanceSupervisor(tmp_path, report=lambda r: None, log_lines=lambda i, lines: sent.append((i, lines)))
    log = tmp_path / "instance-7.log"
    log.write_text(
        "INFO Loading weights took 0.52 seconds\n"
        'INFO:     127.0.0.1:51234 - "GET /metrics HTTP/1.1" 200 OK\n'
        'INFO:     10.0.0.5:40000 - "POST /v1/chat/completions HTTP/1.1" 200 OK\n'
        'INFO:     127.0.0.1:51236 - "GET /metrics HTTP/1.1" 200 OK\n'
    )
    supervisor._stream_log(Managed(7, "chat", "127.0.0.1", 8000, [], {}, str(log)))
    assert sent == [
        (
            7,
            [
                "INFO Loading weights took 0.52 seconds",
                'INFO:     10.0.0.5:40000 - "POST /v1/chat/completions HTTP/1.1" 200 OK',
            ],
        )
    ]
    assert "GET /metrics" in log.read_text()  # kept in the file on the node
