"""What made a result: the machine and the versions of the software, as a report records them."""
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = ("nnunet-scnas", "nnunetv2", "torch", "dynamic-network-architectures", "batchgenerators", "SimpleITK",
            "numpy")


def machine() -> dict[str, str]:
    cpuinfo = Path("/proc/cpuinfo")
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                if line.startswith("model name")), "") if cpuinfo.is_file() else platform.processor()
    memory = ""
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        memory = f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2 ** 30:.0f} GiB"
    return {"platform": platform.platform(), "cpu": cpu or "unknown", "cpu cores": str(os.cpu_count()),
            "memory": memory or "unknown", "python": sys.version.split()[0], "gpu": _gpu()}


def _gpu() -> str:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    except Exception:  # a broken CUDA set-up must not stop a report from being written
        return "unknown"


def versions() -> dict[str, str]:
    found = {}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found
