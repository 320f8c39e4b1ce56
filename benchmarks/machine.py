"""Shared by the benchmark scripts: what machine and versions a result came from, medians, and the results file."""

import json
import os
import platform
import statistics
import subprocess
import time
from importlib import metadata
from pathlib import Path


def cpu_model():
    """Return the CPU model name from /proc/cpuinfo, or the platform's guess."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# The instruction sets int8 and bfloat16 speed depend on (the CPU model changes between sessions).
SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


def cpu_flags():
    """Return which of `SPEED_FLAGS` /proc/cpuinfo lists, in that order."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    present = set(line.split(":", 1)[1].split())
                    return [flag for flag in SPEED_FLAGS if flag in present]
    except OSError:
        pass
    return []


def load_average():
    """Return the 1-minute load average, to show how busy the shared machine was."""
    return os.getloadavg()[0]


def machine_info(packages=("tensorflow-cpu", "keras", "numpy", "pillow", "onnxruntime")):
    """Return a dict describing the machine and the package versions."""
    versions = {}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    try:
        git_commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        git_commit = ""
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "python": platform.python_version(),
        "versions": versions,
        "load_average_1min": round(load_average(), 2),
        "git_commit": git_commit,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def describe_machine(**kwargs):
    """Return a one-paragraph text of `machine_info`, for printing at the top of a benchmark."""
    info = machine_info(**kwargs)
    versions = ", ".join(f"{name} {version}" for name, version in info["versions"].items())
    return (
        f"machine: nproc={info['nproc']}, cpu={info['cpu']} ({' '.join(info['cpu_flags'])}), "
        f"python {info['python']}, {versions}; "
        f"load average {info['load_average_1min']} at start; commit {info['git_commit']}; {info['date']}"
    )


def median(values):
    """Return the median of a list of numbers."""
    return statistics.median(values)


def append_jsonl(path, record, *, sort_keys=False):
    """Append `record` to the JSON-lines file at `path` (its folder made if missing), in one write, flushed to disk."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, sort_keys=sort_keys) + "\n"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())
