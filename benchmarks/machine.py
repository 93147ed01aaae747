"""Facts about the machine a benchmark ran on (CPU, cores, load, library versions), for the report.

Read from /proc and package metadata only (no psutil), so it works in CI and on rigs alike.
"""

from __future__ import annotations

import os
import platform
import re
import sys
import time
from importlib import metadata

PACKAGES = ("numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "torch", "pylsl", "pyzmq", "mne-lsl",
            "h5py", "scipy")


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


def machine_slug(facts: dict | None = None) -> str:
    """Folder name for reference results, e.g. 'cpu-2core-amd-epyc'."""
    facts = facts or machine_facts()
    model = re.sub(r"\((r|tm)\)|cpu|processor|@.*$", "", facts["cpu_model"].lower())
    model = re.sub(r"[^a-z0-9]+", "-", model).strip("-")[:40] or "unknown"
    return f"cpu-{facts['cores']}core-{model}"


def cpu_times() -> tuple[float, float]:
    """(user + system CPU seconds of this process and its waited-for children, wall seconds)."""
    t = os.times()
    return t.user + t.system, time.monotonic()


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
