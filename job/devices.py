"""What hardware the job sees, and the precision/XLA choices that follow from it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from job.config import Precision, Switch
from job.errors import EnvironmentNotReady

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # CPU instructions that make bfloat16 matmuls fast.


@dataclass(frozen=True)
class Devices:
    gpus: list[dict[str, object]]
    cpu_bfloat16: bool

    def describe(self) -> list[str]:
        names = [f"GPU {index}: {gpu.get('device_name', 'unknown')}" for index, gpu in enumerate(self.gpus)]
        return names or ["CPU only" + (" (bfloat16 instructions)" if self.cpu_bfloat16 else "")]


def detect() -> Devices:
    gpus = tf.config.list_physical_devices("GPU")
    cpuinfo = Path("/proc/cpuinfo")
    cpu_flags = set(cpuinfo.read_text(errors="replace").split()) if cpuinfo.exists() else set()
    return Devices(
        gpus=[{"name": gpu.name, **tf.config.experimental.get_device_details(gpu)} for gpu in gpus],
        cpu_bfloat16=any(flag in cpu_flags for flag in BF16_CPU_FLAGS),
    )


def require_gpu(devices: Devices) -> None:
    if not devices.gpus:
        raise EnvironmentNotReady(
            "--require-gpu is set but TensorFlow sees no GPU: the node's NVIDIA driver or CUDA libraries are not "
            "ready, or the pod did not get nvidia.com/gpu (in a Job, a new pod is tried); "
            "drop --require-gpu to train on CPU"
        )


def resolve_precision(requested: Precision, devices: Devices) -> str:
    """auto: float16 on NVIDIA GPUs with tensor cores (compute capability ≥ 7), bfloat16 on CPUs with it."""
    if requested != Precision.auto:
        return requested.value
    capabilities = [gpu.get("compute_capability") for gpu in devices.gpus]
    if capabilities and all(isinstance(cc, tuple) and cc >= (7, 0) for cc in capabilities):
        return Precision.mixed_float16.value
    if not devices.gpus and devices.cpu_bfloat16:
        return Precision.mixed_bfloat16.value
    return Precision.float32.value


def resolve_xla(requested: Switch, devices: Devices) -> bool:
    """auto: on for GPUs; off on CPU, where XLA measured 0.44× here."""
    return bool(devices.gpus) if requested == Switch.auto else requested == Switch.on
