"""The torch device a command runs on: one definition for ``train`` and ``predict``.

torch is imported only inside :func:`resolve_device`, so importing this module (for the
``--device`` choices) stays cheap.
"""

from __future__ import annotations

from typing import Literal, get_args

from geotiler.errors import ConfigError

Device = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[Device, ...] = get_args(Device)


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
