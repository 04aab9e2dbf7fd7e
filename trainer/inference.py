"""A model file as a predictor: the model side of ``geotiler predict``.

:func:`load_predictor` loads a model file (:func:`trainer.modelfile.load_model`) and wraps
it as a :class:`ModelPredictor`, a function from a batch of raster windows to probabilities
(the :class:`geotiler.predict.config.Predictor` protocol, which is all prediction sees of a
model). :class:`ModelLoader` is the same load, postponed: a picklable path, device,
precision and engine that a Dask worker calls once to load its own copy, so model weights
never travel with a task.

Engine (:func:`geotiler.predict.config.resolve_engine`): ``torch`` runs the network in
eager mode as below; ``onnxruntime`` exports it once per load and runs the graph with ONNX
Runtime on CPU in fp32 (:class:`trainer.onnx_engine.OnnxEngine`). Both take the same
normalized windows (:meth:`trainer.modelfile.LoadedModel.normalize`) and read the outputs
with the same :func:`trainer.networks.probabilities`, on the same forward thread.

Precision: ``bf16`` runs the forward pass under bfloat16 autocast (the weights stay fp32,
:func:`trainer.distributed.autocast`, as in training). The network and its input are
channels-last on CPU (oneDNN: 1.2x in fp32, 1.4x in bf16 against 0.86x without it; README,
"Inference engines") and for bf16 on CUDA (cuDNN's tensor cores); fp32 on CUDA keeps the
plain layout.

Nothing here caches: whoever loads a model keeps it for as long as it is needed (one run
with the threaded scheduler, one worker's life on a cluster) and closes it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import numpy as np
import torch

from geotiler.predict.config import resolve_engine
from trainer import modelfile
from trainer.distributed import Dist, autocast

if TYPE_CHECKING:
    from trainer.onnx_engine import OnnxEngine


class ModelPredictor:
    """A loaded model file as a :class:`geotiler.predict.config.Predictor`.

    Every forward pass runs on one thread of its own, started by the thread that makes this
    object, so it keeps that thread's CPU priority while the threads that read, blend and
    polygonize may give theirs up (``pipelines.predict``). One thread also serializes the
    passes: torch already spreads each one over every core. :meth:`close` (or ``with``)
    stops the thread.

    ``precision`` and ``engine`` are resolved (``fp32`` or ``bf16``; ``torch`` or
    ``onnxruntime``, which takes fp32 on CPU only; see the module docstring). With
    onnxruntime the network is exported here (logged with its time).

    Raises:
        ValueError: an unresolved or unsupported precision / engine / device combination.
        ImportError: onnxruntime or onnx is missing (the onnxruntime engine).
    """

    def __init__(self, loaded: modelfile.LoadedModel, precision: str = "fp32",
                 engine: str = "torch") -> None:
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be resolved to fp32 or bf16, got {precision!r}")
        if engine not in ("torch", "onnxruntime"):
            raise ValueError(f"engine must be resolved to torch or onnxruntime, got {engine!r}")
        self.loaded = loaded
        self.precision = precision
        self.engine = engine
        self._context = Dist(device=loaded.device, precision=precision)
        last = precision == "bf16" or loaded.device.type == "cpu"
        self._layout = torch.channels_last if last else torch.contiguous_format
        self._onnx: OnnxEngine | None = None
        if engine == "onnxruntime":
            if precision != "fp32" or loaded.device.type != "cpu":
                raise ValueError("the onnxruntime engine runs fp32 on CPU, got "
                                 f"{precision} on {loaded.device.type}")
            from trainer.onnx_engine import OnnxEngine

            size = loaded.spec.tile_size
            example = torch.zeros(1, loaded.num_bands, size, size)
            self._onnx = OnnxEngine(loaded.net, loaded.spec.model, example)
        else:
            loaded.net.to(memory_format=self._layout)  # type: ignore[call-overload]
        self._runner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="geotiler-forward")
        self._runner.submit(int).result()  # start the thread now, from this thread

    @property
    def spec(self) -> modelfile.ModelSpec:
        return self.loaded.spec

    @property
    def label(self) -> str:
        """The engine and precision that run, as the summary line says them: ``torch bf16``."""
        return f"{self.engine} {self.precision}"

    def __call__(self, image: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """(N, C, S, S) source-dtype windows and (N, S, S) bool validity -> (N, K, S, S)
        float32 probabilities in [0, 1]."""
        return self._runner.submit(self._forward, image, valid).result()

    def _forward(self, image: np.ndarray, valid: np.ndarray) -> np.ndarray:
        x = self.loaded.normalize(image, valid)
        if self._onnx is not None:
            return self._onnx(x)
        x = x.contiguous(memory_format=self._layout)
        with autocast(self._context, self.precision):
            y = self.loaded.predict(x)
        return y.float().cpu().numpy()

    def close(self) -> None:
        """Stop the forward thread (after the pass it runs, if any)."""
        self._runner.shutdown(wait=True)

    def __enter__(self) -> ModelPredictor:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


def load_predictor(path: Path | str, device: str = "cpu", precision: str = "fp32",
                   engine: str = "torch") -> ModelPredictor:
    """The model file at ``path`` on ``device`` (``cpu`` or ``cuda``), ready to predict in
    ``precision`` (one of :data:`geotiler.device.PRECISIONS`) with ``engine`` (one of
    :data:`geotiler.predict.config.ENGINES`); ``auto`` is resolved for the device
    (:func:`geotiler.predict.config.resolve_engine`), the result is
    :attr:`ModelPredictor.engine` and :attr:`ModelPredictor.precision`. The defaults are
    the reference (torch, fp32); ``geotiler predict``'s come from its config.

    Raises:
        ModelFileError: the file is missing, corrupt or not a geotiler model.
        ConfigError: an unknown precision or engine, ``bf16`` on a device without it, or
            onnxruntime where it cannot run (not installed, CUDA, bf16).
    """
    engine, resolved = resolve_engine(engine, precision, torch.device(device).type)
    return ModelPredictor(modelfile.load_model(Path(path), device=device), resolved, engine)


@dataclass(frozen=True)
class ModelLoader:
    """A model file to load later, where it runs (picklable: a path, device, precision and
    engine, as :func:`load_predictor` takes them)."""

    path: str
    device: str = "cpu"
    precision: str = "fp32"
    engine: str = "torch"

    def __call__(self) -> ModelPredictor:
        return load_predictor(self.path, self.device, self.precision, self.engine)
