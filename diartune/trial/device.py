"""What a trial runs on: the GPU when the pod has one, and as many CPUs as it was given."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota> <period>" or "max <period>"


def available_cpus(cpu_max: Path = _CPU_MAX) -> int:
    """CPUs this process may use: its affinity, capped by its cgroup's CPU quota (a pod's
    CPU limit); ``os.cpu_count()`` counts the node's instead."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = cpu_max.read_text().split()
    except (OSError, ValueError):
        return cpus
    if quota == "max":
        return cpus
    return max(1, min(cpus, math.ceil(int(quota) / int(period))))


def loader_workers(cpus: int) -> int:
    """DataLoader workers for training: none on 2 CPUs or fewer (the main process decodes
    faster than it feeds workers there), else half the CPUs, at most 8."""
    return 0 if cpus <= 2 else min(8, cpus // 2)


def device() -> torch.device:
    """The GPU when there is one, else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
