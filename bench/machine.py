"""What the figures were measured on: CPU, memory, versions, date."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any


def describe(redis_server: str) -> dict[str, Any]:
    """The machine and the software versions, for the results file."""
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "redis_server": _redis_version(redis_server),
        "dramatiq": metadata.version("dramatiq"),
        "redis_py": metadata.version("redis"),
        "uvicorn": metadata.version("uvicorn"),
        "starlette": metadata.version("starlette"),
        "pydantic": metadata.version("pydantic"),
        "wrk": _wrk_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _redis_version(binary: str) -> str:
    try:
        output = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return "unknown"
    for part in output.split():
        if part.startswith("v="):
            return part[2:]
    return output.strip() or "unknown"


def _wrk_version() -> str:
    try:
        output = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=10)
    except OSError:
        return "not installed"
    first = (output.stdout or output.stderr).splitlines()
    return first[0].split(" [")[0] if first else "unknown"
