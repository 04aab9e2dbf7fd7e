"""ONNX Runtime as the network's engine on CPU: export the loaded generator once, run the graph.

``geotiler predict --engine onnxruntime`` (and ``auto`` on CPU where the ``onnx`` extra is
installed) runs the network through ONNX Runtime's CPU execution provider instead of torch's
eager mode: 2.5x eager fp32 on the small U-Net in the measurement behind this engine
(README, "Inference engines"), with the same masks.

The graph is :class:`ProbabilityNet`: the generator followed by
:func:`trainer.networks.probabilities`, so ONNX Runtime returns probabilities read from the
outputs by the very function torch's path uses (no second formula). The normalization stays
outside the graph (:meth:`trainer.modelfile.LoadedModel.normalize`, shared with torch).

Export: :func:`export_onnx`, once per load (each Dask worker exports its own copy), into an
in-memory buffer that is dropped once the session holds the graph; batch, height and width
are dynamic axes. It uses torch's TorchScript-based exporter (``dynamo=False``, which needs
the ``onnx`` package): it traces the module once, 0.1-6 s here against 58-90 s for the
``torch.export``-based exporter on the same networks (busy 2-core machine). ONNX Runtime
computes in fp32 (bf16 does not apply: ``geotiler.predict.config.resolve_engine``).
"""

from __future__ import annotations

import io
import logging
import time
import warnings

import numpy as np
import torch
from torch import nn

from trainer.config import ModelConfig
from trainer.networks import probabilities

log = logging.getLogger(__name__)

OPSET = 17  # ONNX opset of the exported graph (ONNX Runtime >= 1.14 runs it)


class ProbabilityNet(nn.Module):
    """A generator whose output is already probabilities: (N, C, H, W) normalized float32
    -> (N, K, H, W) float32 in [0, 1] (:func:`trainer.networks.probabilities`)."""

    def __init__(self, net: nn.Module, config: ModelConfig) -> None:
        super().__init__()
        self.net, self.config = net, config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return probabilities(self.net(x), self.config)


def export_onnx(module: nn.Module, example: torch.Tensor) -> bytes:
    """``module`` (on CPU, in eval mode) as a serialized ONNX graph, input ``x`` -> output
    ``p``, with dynamic batch, height and width axes; ``example`` is one input it is traced
    on (e.g. one (1, C, S, S) window of zeros).

    Raises:
        ImportError: the ``onnx`` package is missing (``pip install "geotiler[onnx]"``).
    """
    axes = {0: "n", 2: "h", 3: "w"}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # torch >= 2.9 calls this exporter legacy; it is the one that exports in seconds.
        warnings.simplefilter("ignore", DeprecationWarning)
        # A file object is what this exporter writes to; the stub names paths only.
        torch.onnx.export(module, (example,), buffer,  # type: ignore[arg-type]
                          input_names=["x"], output_names=["p"],
                          dynamic_axes={"x": axes, "p": axes}, opset_version=OPSET,
                          dynamo=False)
    return buffer.getvalue()


class OnnxEngine:
    """A generator exported to ONNX and run by ONNX Runtime on CPU, in fp32.

    ``threads``: ONNX Runtime's intra-op threads (default: torch's thread count, so both
    engines use the cores alike). Its threads sleep between passes instead of spinning, so
    the reading and polygonizing threads of ``predict`` keep the cores the network leaves.
    :attr:`export_seconds` is the time the export took.

    Raises:
        ImportError: onnxruntime or onnx is missing.
    """

    def __init__(self, net: nn.Module, config: ModelConfig, example: torch.Tensor,
                 threads: int | None = None) -> None:
        import onnxruntime as ort

        t0 = time.perf_counter()
        graph = export_onnx(ProbabilityNet(net, config).eval(), example)
        self.export_seconds = time.perf_counter() - t0
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(graph, options,
                                             providers=["CPUExecutionProvider"])
        log.info("onnxruntime %s: exported the network in %.2fs (%.1f MB), session ready "
                 "in %.2fs, %d threads", ort.__version__, self.export_seconds,
                 len(graph) / 2**20, time.perf_counter() - t0 - self.export_seconds,
                 options.intra_op_num_threads)

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        """(N, C, H, W) normalized float32 on CPU -> (N, K, H, W) float32 probabilities."""
        feed = np.ascontiguousarray(x.detach().numpy(), dtype=np.float32)
        return self._session.run(["p"], {"x": feed})[0]
