"""The torch device a command runs on: one definition for ``train`` and ``predict``.

torch is imported only inside :func:`resolve_device`, so importing this module (for the
``--device`` choices) stays cheap.
"""

from __future__ import annotations

from typing import Literal, get_args

from geotiler.errors import ConfigError

Device = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[Device, ...] = get_args(Device)

# Arithmetic precision of the network (train and predict): "auto" picks bf16 autocast where
# the device computes it natively (resolve_precision), else fp32.
Precision = Literal["auto", "fp32", "bf16"]
PRECISIONS: tuple[Precision, ...] = get_args(Precision)


def resolve_device(device: str) -> Literal["cpu", "cuda"]:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cpu``/``cuda`` as asked.

    Raises:
        ConfigError: ``device`` is not one of :data:`DEVICES`, or ``cuda`` was asked for on a
            machine where torch sees no CUDA GPU.
    """
    if device not in DEVICES:
        raise ConfigError(f"--device must be one of {', '.join(DEVICES)}, got {device!r}")
    import torch

    cuda = torch.cuda.is_available()
    if device == "cuda" and not cuda:
        raise ConfigError("--device cuda was asked for but no CUDA GPU is available; use "
                          "--device cpu or auto")
    return "cuda" if device == "cuda" or (device == "auto" and cuda) else "cpu"


def bf16_native(device_type: str) -> bool:
    """Whether ``device_type`` ("cpu"/"cuda") computes bfloat16 natively: CUDA GPUs from
    Ampere on, CPUs with AVX-512 BF16 or AMX (oneDNN's own check)."""
    import torch

    if device_type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return bool(torch.backends.mkldnn.is_available()
                and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(precision: str, device_type: str) -> Literal["fp32", "bf16"]:
    """``auto`` -> ``bf16`` where :func:`bf16_native`, else ``fp32``; others as asked.

    Raises:
        ConfigError: ``precision`` is unknown, or ``bf16`` on a device without it.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, "
                          f"got {precision!r}")
    native = bf16_native(device_type)
    if precision == "bf16" and not native:
        raise ConfigError(f"--precision bf16 was asked for but this {device_type.upper()} "
                          "has no native bfloat16; use --precision fp32 or auto")
    return "bf16" if precision == "bf16" or (precision == "auto" and native) else "fp32"
