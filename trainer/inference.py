"""A model file as a predictor: the model side of ``geotiler predict``.

:func:`load_predictor` loads a model file (:func:`trainer.modelfile.load_model`) and wraps
it as a :class:`ModelPredictor`, a function from a batch of raster windows to probabilities
(the :class:`geotiler.predict.config.Predictor` protocol, which is all prediction sees of a
model). :class:`ModelLoader` is the same load, postponed: a picklable path and device that a
Dask worker calls once to load its own copy, so model weights never travel with a task.

Nothing here caches: whoever loads a model keeps it for as long as it is needed (one run
with the threaded scheduler, one worker's life on a cluster) and closes it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np

from trainer import modelfile


class ModelPredictor:
    """A loaded model file as a :class:`geotiler.predict.config.Predictor`.

    Every forward pass runs on one thread of its own, started by the thread that makes this
    object, so it keeps that thread's CPU priority while the threads that read, blend and
    polygonize may give theirs up (``pipelines.predict``). One thread also serializes the
    passes: torch already spreads each one over every core. :meth:`close` (or ``with``)
    stops the thread.
    """

    def __init__(self, loaded: modelfile.LoadedModel) -> None:
        self.loaded = loaded
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


def load_predictor(path: Path | str, device: str = "cpu") -> ModelPredictor:
    """The model file at ``path`` on ``device`` (``cpu`` or ``cuda``), ready to predict.

    Raises:
        ModelFileError: the file is missing, corrupt or not a geotiler model.
    """
    return ModelPredictor(modelfile.load_model(Path(path), device=device))


@dataclass(frozen=True)
class ModelLoader:
    """A model file to load later, where it runs (picklable: a path and a device)."""

    path: str
    device: str = "cpu"

    def __call__(self) -> ModelPredictor:
        return load_predictor(self.path, self.device)
