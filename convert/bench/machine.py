"""The machine a benchmark ran on: CPU model and the SIMD features that decide int8 speed, cores, load, OS,
Python; and the versions of the packages that did the work."""

from __future__ import annotations

import os
import platform
from pathlib import Path

# What int8 inference speed depends on, in /proc/cpuinfo's names: x86 AVX2 and AVX-512, the int8 dot-product
# instructions (AVX512-VNNI, AVX-VNNI), the AMX tile units (int8 and bf16 matrix multiply); on ARM, the
# dot-product instructions (asimddp).
SIMD_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16", "asimddp")


def cpu_info(text: str) -> tuple[str | None, str]:
    """(CPU model, the SIMD_FEATURES it has, comma separated) from the text of /proc/cpuinfo. x86 names the
    model in `model name` and its features in `flags`; ARM in `Model`/`Hardware` and `Features`."""
    names: dict[str, str] = {}
    features: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model", "Hardware") and value.strip():
            names.setdefault(key, value.strip())
        elif key in ("flags", "Features"):
            features.update(value.split())
    model = next((names[k] for k in ("model name", "Model", "Hardware") if k in names), None)
    return model, ", ".join(f for f in SIMD_FEATURES if f in features)


def machine() -> dict:
    cpu, flags = platform.processor() or platform.machine(), ""
    try:
        model, flags = cpu_info(Path("/proc/cpuinfo").read_text())
        cpu = model or cpu
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": usable, "simd": flags,
            "os": platform.platform(), "python": platform.python_version(), "load_1min": load}


def versions() -> dict:
    import importlib.metadata as md

    out = {}
    for pkg in ("facelock", "numpy", "tensorflow", "tf-keras", "tensorflow-model-optimization", "ai-edge-litert",
                "opencv-python-headless", "dlib-bin", "dlib"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    return out
