"""The hardware-dependent choices, as pure functions of what the job sees: precision and XLA under `auto`."""

from __future__ import annotations

import pytest

from job.config import Precision, Switch
from job.devices import Devices, require_gpu, resolve_precision, resolve_xla
from job.errors import EXIT_NOT_READY, EnvironmentNotReady

VOLTA: dict[str, object] = {"compute_capability": (7, 0)}
PASCAL: dict[str, object] = {"compute_capability": (6, 1)}
CPU_WITH_BF16, PLAIN_CPU = Devices(gpus=[], cpu_bfloat16=True), Devices(gpus=[], cpu_bfloat16=False)


@pytest.mark.parametrize(
    ("devices", "expected"),
    [
        (Devices(gpus=[VOLTA, VOLTA], cpu_bfloat16=True), "mixed_float16"),  # Tensor cores on every GPU.
        (Devices(gpus=[VOLTA, PASCAL], cpu_bfloat16=False), "float32"),  # One GPU without them decides.
        (Devices(gpus=[{}], cpu_bfloat16=True), "float32"),  # Unknown capability: no GPU precision is assumed.
        (CPU_WITH_BF16, "mixed_bfloat16"),
        (PLAIN_CPU, "float32"),
    ],
)
def test_auto_precision_follows_the_hardware(devices: Devices, expected: str) -> None:
    assert resolve_precision(Precision.auto, devices) == expected


@pytest.mark.parametrize("requested", [Precision.float32, Precision.mixed_bfloat16, Precision.mixed_float16])
def test_a_requested_precision_is_kept_whatever_the_hardware(requested: Precision) -> None:
    for devices in (CPU_WITH_BF16, PLAIN_CPU, Devices(gpus=[VOLTA], cpu_bfloat16=False)):
        assert resolve_precision(requested, devices) == requested.value


def test_auto_xla_is_on_for_gpus_only() -> None:
    assert resolve_xla(Switch.auto, Devices(gpus=[VOLTA], cpu_bfloat16=False)) is True
    assert resolve_xla(Switch.auto, CPU_WITH_BF16) is False
    assert resolve_xla(Switch.on, PLAIN_CPU) is True and resolve_xla(Switch.off, Devices([VOLTA], False)) is False


def test_no_gpu_visible_to_tensorflow_is_retryable_not_a_usage_error() -> None:
    """A node whose driver is not ready exits 6 (a new pod is tried), not 2 (FailJob ends the run)."""
    require_gpu(Devices(gpus=[VOLTA], cpu_bfloat16=False))
    with pytest.raises(EnvironmentNotReady, match="TensorFlow sees no GPU: the node's NVIDIA driver") as raised:
        require_gpu(PLAIN_CPU)
    assert raised.value.exit_code == EXIT_NOT_READY == 6
