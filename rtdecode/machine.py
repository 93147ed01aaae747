"""The machine a run happened on, read from /proc: CPU, cores, memory, load, library versions, and
the CPU seconds of the machine and of single processes (the one /proc reader of rtdecode).

Read from /proc and package metadata only (no psutil), so it works in CI and on rigs alike.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from importlib import metadata

PACKAGES = ("numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "torch", "pylsl", "pyzmq", "mne-lsl",
            "ezmsg", "ezmsg-lsl", "ezmsg-zmq", "h5py", "scipy")


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (Linux) or platform.processor()."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def usable_cores() -> int:
    """Cores this process may run on (affinity), falling back to os.cpu_count()."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def package_versions() -> dict[str, str | None]:
    """Installed versions (None when absent), read from metadata without importing the packages."""
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    try:
        import pylsl

        out["liblsl"] = str(pylsl.library_version())
    except Exception:  # pylsl missing or its library failed to load
        out["liblsl"] = None
    try:
        import zmq

        out["libzmq"] = zmq.zmq_version()
    except Exception:
        out["libzmq"] = None
    return out


def machine_facts() -> dict:
    """Everything the report states about the machine, taken now."""
    return {
        "cpu_model": cpu_model(),
        "cores": usable_cores(),
        "cpu_count": os.cpu_count(),
        "memory_gib": memory_gib(),
        "load_average_1_5_15": load_average(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "packages": package_versions(),
        "taken_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def machine_busy_seconds() -> tuple[float, float] | None:
    """(busy, total) jiffies/ticks in seconds over all CPUs from /proc/stat, for whole-machine load."""
    try:
        with open("/proc/stat") as f:
            fields = [float(x) for x in f.readline().split()[1:]]
    except OSError:
        return None
    hz = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    total = sum(fields[:8])
    return (total - idle) / hz, total / hz


def proc_cpu_seconds(pid: int) -> float | None:
    """user + system CPU seconds of a live process, from /proc/<pid>/stat (None when unreadable)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None
