"""Compare inference engines on the same network and windows (run by hand, not a test).

    python benchmarks/bench_engines.py                          # small U-Net + pix2pix
    python benchmarks/bench_engines.py --nets small --windows 32 --repeats 3
    python benchmarks/bench_engines.py --model model.pt         # a trained model file

For each network it builds one batch of 256 px windows cut from ``sample_data/area.tif``
(normalized as the model would see them) and times, on CPU (or CUDA with ``--device cuda``):

* ``eager fp32`` (today's ``predict``), ``eager fp32 CL`` (channels-last),
  ``eager bf16`` and ``eager bf16 CL`` (bfloat16 autocast, weights fp32);
* ``compile fp32`` / ``compile bf16 CL`` (``torch.compile``, inductor);
* ``onnxruntime fp32`` (``torch.onnx.export``, CPU execution provider);
* ``openvino fp32`` / ``openvino bf16`` (``openvino.convert_model`` of the torch module,
  inference precision hint f32 / bf16).

Every engine computes the probabilities (the network plus its output reading,
:func:`trainer.networks.probabilities`). Repeats are interleaved (engine A, B, C, ... then
again), so a busy machine slows all of them alike; ``images/s`` is the median repeat, and
``x fp32`` the ratio against ``eager fp32`` measured in the same run. ``max|dp|``,
``mean|dp|`` and ``mask %`` compare each engine's probabilities with eager fp32's (the mask:
probability >= 0.5, all channels). An engine that fails to build or run is a row with its
error, not a crash. Optional packages: ``pip install onnxruntime onnx onnxscript openvino``.

Without ``--model`` the networks have random weights whose batch-norm statistics are set on
the windows themselves (a few passes in training mode), so every layer is well scaled and the
outputs are decisive like a trained network's; the output bias is then shifted so that about
15 % of footprint pixels are building. A trained model file (``--model``) is better still.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trainer.config import ModelConfig  # noqa: E402
from trainer.networks import build_generator, probabilities  # noqa: E402

log = logging.getLogger("bench_engines")
TILE = 256
NETS = {  # the small preset's U-Net and the pix2pix paper's generator (the full preset)
    "small": ModelConfig(arch="unet", ngf=32, num_downs=5, use_dropout=False),
    "pix2pix": ModelConfig(arch="pix2pix", ngf=64, num_downs=8, use_dropout=True),
}
Run = Callable[[torch.Tensor], np.ndarray]


class Probabilities(nn.Module):
    """A generator whose output is already probabilities (what every engine runs)."""

    def __init__(self, net: nn.Module, config: ModelConfig) -> None:
        super().__init__()
        self.net, self.config = net, config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return probabilities(self.net(x), self.config)


def sample_windows(count: int, channels: int = 3) -> torch.Tensor:
    """``count`` normalized (N, C, 256, 256) float32 windows from the sample scene."""
    import rasterio

    with rasterio.open(ROOT / "sample_data" / "area.tif") as src:
        image = src.read(list(range(1, channels + 1))).astype(np.float32)
    mean = image.mean(axis=(1, 2), keepdims=True)
    std = image.std(axis=(1, 2), keepdims=True) + 1e-6
    image = (image - mean) / std
    rng = np.random.default_rng(0)
    side = image.shape[1] - TILE
    out = []
    for _ in range(count):
        r, c = rng.integers(0, side + 1, 2)
        out.append(image[:, r:r + TILE, c:c + TILE])
    return torch.from_numpy(np.stack(out))


def random_net(config: ModelConfig, windows: torch.Tensor) -> nn.Module:
    """Random weights, batch-norm statistics set on ``windows``, output bias calibrated."""
    torch.manual_seed(0)
    net = build_generator(config, init=False)  # PyTorch's default init keeps the scale
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # cumulative average over the passes below
    net.train()
    with torch.no_grad():
        for batch in windows.split(4):
            net(batch)
    net.eval()
    last = [m for m in net.modules() if isinstance(m, nn.ConvTranspose2d)][-1]
    seen: list[torch.Tensor] = []
    hook = last.register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
    with torch.no_grad():
        net(windows[:4])
    hook.remove()
    if last.bias is None:
        raise SystemExit("the network's last layer has no bias to calibrate")
    with torch.no_grad():
        for channel in range(config.out_channels):
            level = torch.quantile(seen[0][:, channel].flatten()[::7].float(), 0.85)
            last.bias[channel] -= level
    return net


def load_net(path: Path) -> tuple[nn.Module, ModelConfig]:
    from trainer.modelfile import load_model

    loaded = load_model(path, "cpu")
    return loaded.net, loaded.spec.model


def batched(module: Callable[[torch.Tensor], torch.Tensor], batch: int,
            device: torch.device) -> Run:
    def run(x: torch.Tensor) -> np.ndarray:
        outs = []
        for part in x.split(batch):
            outs.append(module(part.to(device)).float().cpu().numpy())
        if device.type == "cuda":
            torch.cuda.synchronize()
        return np.concatenate(outs)
    return run


def eager(model: nn.Module, batch: int, device: torch.device, bf16: bool,
          channels_last: bool, compiled: bool = False) -> Run:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=fmt).eval()
    fn: Callable[[torch.Tensor], torch.Tensor] = model
    if compiled:
        fn = torch.compile(model)

    def forward(x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=fmt)
        ctx = (torch.autocast(device.type, dtype=torch.bfloat16) if bf16
               else contextlib.nullcontext())
        with torch.inference_mode(), ctx:
            return fn(x)

    return batched(forward, batch, device)


def onnxruntime_engine(model: nn.Module, batch: int, example: torch.Tensor,
                       workdir: Path) -> Run:
    import onnxruntime as ort

    path = workdir / "net.onnx"
    torch.onnx.export(model.cpu().eval(), (example[:batch],), str(path),
                      input_names=["x"], output_names=["p"],
                      dynamic_axes={"x": {0: "n"}, "p": {0: "n"}}, dynamo=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(x: torch.Tensor) -> np.ndarray:
        return np.concatenate([session.run(["p"], {"x": part.numpy()})[0]
                               for part in x.split(batch)])
    return run


def openvino_engine(model: nn.Module, batch: int, example: torch.Tensor, hint: str) -> Run:
    import openvino as ov

    ov_model = ov.convert_model(model.cpu().eval(), example_input=example[:batch])
    compiled = ov.Core().compile_model(ov_model, "CPU", {
        "INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": torch.get_num_threads()})
    request = compiled.create_infer_request()

    def run(x: torch.Tensor) -> np.ndarray:
        outs = []
        for part in x.split(batch):
            result = request.infer({0: part.numpy()})
            outs.append(np.array(result[compiled.output(0)]))
        return np.concatenate(outs)
    return run


def build_engines(model: nn.Module, batch: int, example: torch.Tensor, device: torch.device,
                  workdir: Path, only: set[str] | None) -> dict[str, Run | str]:
    """Engine name -> run function, or the error that stopped it (one line)."""
    import copy

    makers: dict[str, Callable[[], Run]] = {
        "eager fp32": lambda: eager(copy.deepcopy(model), batch, device, False, False),
        "eager fp32 CL": lambda: eager(copy.deepcopy(model), batch, device, False, True),
        "eager bf16": lambda: eager(copy.deepcopy(model), batch, device, True, False),
        "eager bf16 CL": lambda: eager(copy.deepcopy(model), batch, device, True, True),
        "compile fp32": lambda: eager(copy.deepcopy(model), batch, device, False, False, True),
        "compile bf16 CL": lambda: eager(copy.deepcopy(model), batch, device, True, True, True),
    }
    if device.type == "cpu":
        makers["onnxruntime fp32"] = lambda: onnxruntime_engine(
            copy.deepcopy(model), batch, example, workdir)
        makers["openvino fp32"] = lambda: openvino_engine(copy.deepcopy(model), batch,
                                                          example, "f32")
        makers["openvino bf16"] = lambda: openvino_engine(copy.deepcopy(model), batch,
                                                          example, "bf16")
    engines: dict[str, Run | str] = {}
    for name, make in makers.items():
        if only and name != "eager fp32" and name not in only and name.split()[0] not in only:
            continue
        t0 = time.perf_counter()
        try:
            run = make()
            run(example[:batch])  # warm-up (and compilation)
            run(example[:batch])
            engines[name] = run
            log.info("%s ready in %.1fs", name, time.perf_counter() - t0)
        except Exception as err:  # a failing engine is a row of the table
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            engines[name] = f"{type(err).__name__}: {first[:90]}"
            log.info("%s failed: %s", name, engines[name])
    return engines


def agreement(p: np.ndarray, ref: np.ndarray) -> tuple[float, float, float]:
    diff = np.abs(p.astype(np.float32) - ref)
    masks = (p >= 0.5) == (ref >= 0.5)
    return float(diff.max()), float(diff.mean()), float(100 * masks.mean())


def bench_net(name: str, model: nn.Module, windows: torch.Tensor, args: argparse.Namespace,
              device: torch.device, workdir: Path) -> list[str]:
    engines = build_engines(model, args.batch_size, windows, device, workdir,
                            set(args.engines) if args.engines else None)
    ready = {k: v for k, v in engines.items() if not isinstance(v, str)}
    times: dict[str, list[float]] = {k: [] for k in ready}
    outputs: dict[str, np.ndarray] = {}
    for _ in range(args.repeats):
        for engine, run in ready.items():  # interleaved: A, B, C, ... A, B, C
            t0 = time.perf_counter()
            outputs[engine] = run(windows)
            times[engine].append(time.perf_counter() - t0)
    n = len(windows)
    base = n / statistics.median(times["eager fp32"])
    ref = outputs["eager fp32"]
    rows = []
    for engine, run in engines.items():
        if isinstance(run, str):
            rows.append(f"| {name} | {engine} | failed: {run} | | | | |")
            continue
        speed = n / statistics.median(times[engine])
        mx, mean, mask = agreement(outputs[engine], ref)
        rows.append(f"| {name} | {engine} | {speed:.1f} | {speed / base:.2f} | {mx:.4f} | "
                    f"{mean:.5f} | {mask:.2f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nets", nargs="+", choices=list(NETS), default=list(NETS))
    parser.add_argument("--model", type=Path, default=None,
                        help="A trained model file instead of --nets' random networks.")
    parser.add_argument("--windows", type=int, default=32, help="256 px windows per repeat.")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--engines", nargs="+", default=None,
                        help="Only these engines, by full name ('eager bf16 CL') or "
                        "first word (eager, compile, onnxruntime, openvino); eager fp32 "
                        "always runs.")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        stream=sys.stderr)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_engines-") as tmp:
        if args.model:
            net, config = load_net(args.model)
            windows = sample_windows(args.windows, config.in_channels)
            nets = [(args.model.name, Probabilities(net, config), windows)]
        else:
            windows = sample_windows(args.windows)
            nets = [(name, Probabilities(random_net(NETS[name], windows), NETS[name]), windows)
                    for name in args.nets]
        for name, model, x in nets:
            log.info("%s: %d windows of %d px, batch %d", name, len(x), TILE, args.batch_size)
            rows += bench_net(name, model, x, args, device, Path(tmp))
    bf16 = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    header = ["", f"{args.device}, {args.threads} threads, torch {torch.__version__}, "
              f"native bf16: {bool(bf16)}; {args.windows} windows x {args.repeats} repeats, "
              f"batch {args.batch_size}",
              "| net | engine | images/s | x fp32 | max abs dp | mean abs dp | mask agree % |",
              "|---|---|---:|---:|---:|---:|---:|"]
    sys.stdout.write("\n".join(header + rows) + "\n")


if __name__ == "__main__":
    main()
