"""A model file as a predictor: the model side of ``geotiler predict``.

:func:`load_predictor` loads a model file (:func:`trainer.modelfile.load_model`) and wraps
it as a :class:`ModelPredictor`, a function from a batch of raster windows to probabilities
(the :class:`geotiler.predict.config.Predictor` protocol, which is all prediction sees of a
model). :class:`ModelLoader` is the same load, postponed: a picklable path, device and
precision that a Dask worker calls once to load its own copy, so model weights never travel
with a task.

Precision: ``bf16`` runs the forward pass under bfloat16 autocast (the weights stay fp32,
:func:`trainer.distributed.autocast`, as in training). The network and its input are
channels-last on CPU (oneDNN: 1.2x in fp32, 1.4x in bf16 against 0.86x without it; README,
"Inference engines") and for bf16 on CUDA (cuDNN's tensor cores); fp32 on CUDA keeps the
plain layout.

Nothing here caches: whoever loads a model keeps it for as long as it is needed (one run
with the threaded scheduler, one worker's life on a cluster) and closes it.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np
import torch

from geotiler.device import resolve_precision
from geotiler.predict.config import TTA_MODES
from trainer import modelfile
from trainer.distributed import Dist, autocast


class ModelPredictor:
    """A loaded model file as a :class:`geotiler.predict.config.Predictor`.

    Every forward pass runs on one thread of its own, started by the thread that makes this
    object, so it keeps that thread's CPU priority while the threads that read, blend and
    polygonize may give theirs up (``pipelines.predict``). One thread also serializes the
    passes: torch already spreads each one over every core. :meth:`close` (or ``with``)
    stops the thread.

    ``precision`` is resolved (``fp32`` or ``bf16``, see the module docstring). ``tta``
    (:data:`geotiler.predict.config.TTA_MODES`) averages the outputs of each window's
    symmetries (:func:`symmetries`), each mapped back onto the window.
    """

    def __init__(self, loaded: modelfile.LoadedModel, precision: str = "fp32",
                 tta: str = "none") -> None:
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be resolved to fp32 or bf16, got {precision!r}")
        self.loaded = loaded
        self.precision = precision
        self.transforms = symmetries(tta)
        self._context = Dist(device=loaded.device, precision=precision)
        last = precision == "bf16" or loaded.device.type == "cpu"
        self._layout = torch.channels_last if last else torch.contiguous_format
        loaded.net.to(memory_format=self._layout)  # type: ignore[call-overload]
        self._runner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="geotiler-forward")
        self._runner.submit(int).result()  # start the thread now, from this thread

    @property
    def spec(self) -> modelfile.ModelSpec:
        return self.loaded.spec

    def __call__(self, image: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """(N, C, S, S) source-dtype windows and (N, S, S) bool validity -> (N, K, S, S)
        float32 probabilities in [0, 1]."""
        return self._runner.submit(self._forward, image, valid).result()

    def _forward(self, image: np.ndarray, valid: np.ndarray) -> np.ndarray:
        x = self.loaded.normalize(image, valid)
        total = None
        for forward, back in self.transforms:
            with autocast(self._context, self.precision):
                y = self.loaded.predict(
                    forward(x).contiguous(memory_format=self._layout))
            y = back(y.float())
            total = y if total is None else total + y
        assert total is not None
        if len(self.transforms) > 1:
            total /= len(self.transforms)
        return total.cpu().numpy()

    def close(self) -> None:
        """Stop the forward thread (after the pass it runs, if any)."""
        self._runner.shutdown(wait=True)

    def __enter__(self) -> ModelPredictor:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


Transform = Callable[[torch.Tensor], torch.Tensor]


def symmetries(tta: str) -> list[tuple[Transform, Transform]]:
    """(forward, inverse) pairs on (N, C, H, W) square windows for a test-time augmentation
    mode: ``none`` (the identity), ``flips`` (identity, left-right, up-down, both) or ``d4``
    (those four and their transposes: the eight symmetries of the square).

    Raises:
        ValueError: an unknown mode.
    """
    def flip(dims: tuple[int, ...]) -> tuple[Transform, Transform]:
        def f(t: torch.Tensor) -> torch.Tensor:
            return t.flip(dims) if dims else t
        return f, f

    def transposed(dims: tuple[int, ...]) -> tuple[Transform, Transform]:
        # forward: flip, then swap H and W; inverse: swap back, then flip back
        def fwd(t: torch.Tensor) -> torch.Tensor:
            return (t.flip(dims) if dims else t).transpose(-1, -2)

        def inv(t: torch.Tensor) -> torch.Tensor:
            t = t.transpose(-1, -2)
            return t.flip(dims) if dims else t
        return fwd, inv

    flips: list[tuple[int, ...]] = [(), (-1,), (-2,), (-2, -1)]
    if tta == "none":
        return [flip(())]
    if tta == "flips":
        return [flip(d) for d in flips]
    if tta == "d4":
        return [flip(d) for d in flips] + [transposed(d) for d in flips]
    raise ValueError(f"tta must be one of {', '.join(TTA_MODES)}, got {tta!r}")


def load_predictor(path: Path | str, device: str = "cpu",
                   precision: str = "fp32", tta: str = "none") -> ModelPredictor:
    """The model file at ``path`` on ``device`` (``cpu`` or ``cuda``), ready to predict in
    ``precision`` (one of :data:`geotiler.device.PRECISIONS`; ``auto`` is resolved for the
    device, the result is :attr:`ModelPredictor.precision`).

    Raises:
        ModelFileError: the file is missing, corrupt or not a geotiler model.
        ConfigError: ``precision`` is unknown, or ``bf16`` on a device without it.
    """
    resolved = resolve_precision(precision, torch.device(device).type)
    return ModelPredictor(modelfile.load_model(Path(path), device=device), resolved, tta)


@dataclass(frozen=True)
class ModelLoader:
    """A model file to load later, where it runs (picklable: a path, device, precision and
    test-time augmentation)."""

    path: str
    device: str = "cpu"
    precision: str = "fp32"
    tta: str = "none"

    def __call__(self) -> ModelPredictor:
        return load_predictor(self.path, self.device, self.precision, self.tta)
