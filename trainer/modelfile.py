"""The model file: generator weights plus everything ``predict`` needs, in one file.

Layout (read with ``torch.load(weights_only=True)``, so loading never runs code from the
file)::

    {
        "format": "geotiler-model",
        "format_version": 2,
        "spec": "<JSON of ModelSpec>",
        "state_dict": {name: tensor, ...},    # the generator's weights and buffers, on CPU
    }

The spec (:class:`ModelSpec`) is the dataset's own schema
(:class:`~geotiler.tiles.schema.DatasetInfo`: bands, normalization, tile size, GSD, mask
channels, tiling config), the architecture (:class:`~trainer.config.ModelConfig`), a
training summary and the geotiler version. Version 1 files (a flat spec) are refused: the
model must be retrained.
"""

from __future__ import annotations

import errno
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from geotiler import __version__
from geotiler.atomic import atomic_path
from geotiler.errors import ConfigError, DatasetError, ModelFileError, OutputError
from geotiler.tiles.schema import DatasetInfo
from trainer.config import ModelConfig, TrainConfig
from trainer.networks import build_generator, probabilities
from trainer.pretrained import PRETRAINED, resolve_init

MODEL_FORMAT = "geotiler-model"
MODEL_FORMAT_VERSION = 2
#: The ``format`` of a training checkpoint (:mod:`trainer.checkpoint`), named here so that
#: each loader can tell a user who gave it the other kind of file.
CHECKPOINT_FORMAT = "geotiler-checkpoint"


def torch_load_reason(err: BaseException) -> str:
    """Why ``torch.load`` could not read a file, in a user's words: torch's own messages
    are a paragraph (a truncated zip) or a bare key (``'101'`` for a text file)."""
    text = str(err)
    if "GLOBAL" in text or "Unsupported global" in text:
        return "it holds Python objects other than tensors and JSON (refused, not run)"
    if ("central directory" in text or "zip archive" in text
            or (isinstance(err, OSError) and err.errno == errno.EINVAL)):  # cut mid-record
        return "the file is truncated or corrupt (its zip archive is incomplete)"
    if ("Weights only load failed" in text or isinstance(err, (pickle.UnpicklingError,
                                                                KeyError, EOFError))):
        return "corrupt or not a torch file"
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    return first[:160]


@dataclass
class ModelSpec:
    """Everything ``predict`` needs besides the weights; JSON-serialisable.

    The dataset's fields are read through it (``spec.bands``, ``spec.mean``, ``spec.tiling``
    ...) so that predict needs no second copy of the contract.
    """

    dataset: DatasetInfo
    model: ModelConfig
    training: dict[str, Any] = field(default_factory=dict)
    geotiler_version: str = __version__

    @property
    def bands(self) -> list[int]:
        return self.dataset.bands

    @property
    def band_names(self) -> list[str]:
        return self.dataset.band_names

    @property
    def dtype(self) -> str:
        return self.dataset.dtype

    @property
    def mean(self) -> list[float]:
        return self.dataset.mean

    @property
    def std(self) -> list[float]:
        return self.dataset.std

    @property
    def tile_size(self) -> int:
        """Tile side in px."""
        return self.dataset.tile_size

    @property
    def gsd(self) -> float:
        """Ground sample distance in m/px."""
        return self.dataset.gsd

    @property
    def mask_channels(self) -> list[str]:
        return self.dataset.mask_channels

    @property
    def target(self) -> str:
        return self.dataset.target

    @property
    def tiling(self) -> dict[str, Any]:
        """The tiling config of the dataset (``contour_width``, ``size`` ...)."""
        return self.dataset.config

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset.to_json(),
            "model": self.model.to_dict(),
            "training": self.training,
            "geotiler_version": self.geotiler_version,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        """Parse a spec; ModelFileError naming what is missing or wrong."""
        if not isinstance(data, dict):
            raise ModelFileError("model spec is not a JSON object")
        missing = [k for k in ("dataset", "model") if k not in data]
        if missing:
            raise ModelFileError(f"model spec lacks {', '.join(missing)}")
        try:
            dataset = DatasetInfo.from_json(data["dataset"])
        except DatasetError as err:
            raise ModelFileError(f"model spec: its dataset {err}") from None
        try:
            spec = cls(
                dataset=dataset,
                model=ModelConfig.from_dict(dict(data["model"])),
                training=dict(data.get("training") or {}),
                geotiler_version=str(data.get("geotiler_version", "unknown")),
            )
        except (ConfigError, TypeError, ValueError) as err:
            raise ModelFileError(f"model spec is invalid: {err}") from None
        if len(spec.mean) != len(spec.bands) or len(spec.std) != len(spec.bands):
            raise ModelFileError("model spec: mean/std do not match the number of bands")
        if spec.model.in_channels != len(spec.bands):
            raise ModelFileError("model spec: network inputs do not match the number of bands")
        if spec.model.out_channels != len(spec.mask_channels):
            raise ModelFileError("model spec: network outputs do not match the mask channels")
        return spec


def save_model(path: Path | str, generator: nn.Module, spec: ModelSpec) -> None:
    """Write the generator and its spec to ``path`` atomically (temp name, then rename)."""
    path = Path(path)
    module = getattr(generator, "module", generator)  # unwrap DDP
    if not isinstance(module, nn.Module):
        raise TypeError(f"expected a torch module, got {type(module).__name__}")
    state = {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
    payload = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "spec": json.dumps(spec.to_dict(), sort_keys=True),
        "state_dict": state,
    }
    save_atomic(payload, path)


def save_atomic(payload: Any, path: Path) -> None:
    """``torch.save`` to a temporary name, then rename (:func:`geotiler.atomic.atomic_path`).

    Raises:
        OutputError: the file cannot be written (a full disk is named as such, where
            torch says ``RuntimeError: [enforce fail at inline_container.cc:672] .
            unexpected pos ...``: :meth:`OutputError.writing`).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
    except (OSError, RuntimeError) as err:
        raise OutputError.writing(path, err) from None


def read_model_file(path: Path | str) -> tuple[ModelSpec, dict[str, torch.Tensor]]:
    """The spec and weights of a model file, checked, without building the network."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model file {path} does not exist (train one with geotiler train)")
    if not path.is_file():
        raise ModelFileError(f"model file {path} is not a file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt zip, pickle payload refused, truncated file, ...
        raise ModelFileError(f"{path} is not a readable geotiler model file: "
                             f"{torch_load_reason(err)}") from None
    if isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT:
        raise ModelFileError(
            f"{path} is a training checkpoint, not a model file: give the model file that "
            "geotiler train wrote with --out (e.g. model.pt), or continue training from this "
            "one with geotiler train --resume")
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise ModelFileError(f"{path} is not a geotiler model file")
    version = payload.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise ModelFileError(f"{path} has an invalid format version {version!r}")
    if version < MODEL_FORMAT_VERSION:
        raise ModelFileError(
            f"{path} has model format version {version}, which this geotiler no longer "
            f"reads (it reads {MODEL_FORMAT_VERSION}); retrain the model with geotiler train"
        )
    if version > MODEL_FORMAT_VERSION:
        raise ModelFileError(
            f"{path} has model format version {version}, newer than this geotiler reads "
            f"({MODEL_FORMAT_VERSION}); upgrade geotiler"
        )
    spec_text = payload.get("spec")
    state = payload.get("state_dict")
    if not isinstance(spec_text, str) or not isinstance(state, dict):
        raise ModelFileError(f"{path} is incomplete: spec or weights missing")
    try:
        spec_data = json.loads(spec_text)
    except ValueError as err:
        raise ModelFileError(f"{path} has a corrupt spec: {err}") from None
    spec = ModelSpec.from_dict(spec_data)
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ModelFileError(f"{path} has corrupt weights")
    # A flipped byte in a weight makes NaN or inf, and a NaN network predicts "building"
    # everywhere with exit 0; training never writes non-finite weights (it stops first).
    broken = [k for k, v in state.items()
              if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise ModelFileError(f"{path} has corrupt weights: {len(broken)} tensor(s) hold NaN "
                             f"or infinite values ({broken[0]}, ...); the file is damaged")
    return spec, state


def load_model(path: Path | str, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model file for inference; ModelFileError on anything wrong with it."""
    spec, state = read_model_file(path)
    net = build_generator(spec.model, init=False)
    _load_state(net, state, f"{path}: weights do not fit the network in its spec")
    return LoadedModel(net, spec, device)


def _load_state(net: nn.Module, state: dict[str, torch.Tensor], context: str) -> None:
    """``net.load_state_dict(state)``, strictly; ModelFileError ``context: <torch's first
    line>`` when the tensors do not fit (torch's own message is a paragraph per tensor)."""
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ModelFileError(f"{context}: {first}") from None


def with_init_network(config: TrainConfig) -> TrainConfig:
    """``config`` with the generator sizes it leaves to the preset (``ngf`` and
    ``num_downs`` of ``None``) taken from its ``--init`` model file, so that ``train --init
    M`` fine-tunes M's network without repeating its options. Sizes given explicitly stay,
    and :func:`init_weights` refuses them if they differ from the file's. Without
    ``init``, ``config`` itself.

    Raises:
        ModelFileError: the ``--init`` file is unreadable or not a geotiler model file.
    """
    if config.init is None or (config.ngf is not None and config.num_downs is not None):
        return config
    spec, _ = read_model_file(resolve_init(config.init))
    # the generator only: a pix2pix discriminator starts afresh at the preset's ndf
    return config.with_sizes({"ngf": spec.model.ngf, "num_downs": spec.model.num_downs})


def init_weights(net: nn.Module, path: Path | str, config: ModelConfig) -> ModelSpec:
    """Start ``net`` (a generator built from ``config``) from the weights of a model file
    (``train --init``): pretraining on one dataset, fine-tuning on another. ``path`` may
    also name weights shipped with geotiler (:data:`trainer.pretrained.PRETRAINED`:
    ``synthetic``).

    Only the generator's weights are taken (a pix2pix discriminator starts afresh); the
    normalization, tiles and training settings of the new run are its own. Float16 weights
    (the shipped ones) become the network's float32.

    Returns the file's spec (its tiles' GSD and bands, for the caller's checks).

    Raises:
        ModelFileError: the file is unreadable or not a geotiler model file, or its weights
            do not fit ``net`` in a way the named fields do not show.
        ConfigError: its network differs from ``config`` (one line naming the fields).
    """
    spec, state = read_model_file(resolve_init(path))
    fields = ("arch", "in_channels", "out_channels", "ngf", "num_downs", "norm", "full_res")
    differ = [f"{f} {getattr(spec.model, f)!r} (this run: {getattr(config, f)!r})"
              for f in fields if getattr(spec.model, f) != getattr(config, f)]
    if differ:
        hint = (" (the shipped weights are for 3-band tiles with footprint + contour masks "
                "and the small U-Net)" if str(path) in PRETRAINED else "")
        raise ConfigError(f"--init {path} has another network: {', '.join(differ)}{hint}")
    _load_state(net, state, f"--init {path}: its weights do not fit this run's network")
    return spec


class LoadedModel:
    """A generator ready for inference, with its spec and normalization."""

    def __init__(self, net: nn.Module, spec: ModelSpec, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.spec = spec

    @property
    def num_bands(self) -> int:
        return len(self.spec.bands)

    def normalize(self, image: np.ndarray, valid: np.ndarray | None = None) -> torch.Tensor:
        """(C,H,W) or (N,C,H,W) source-dtype bands -> float32 normalized tensor on device.

        The dataset's normalization (:meth:`DatasetInfo.normalize`, as in training); pixels
        where ``valid`` ((H,W) or (N,H,W), bool) is False become 0. Raises ModelFileError
        if the image does not have the model's bands.
        """
        if image.ndim not in (3, 4):
            raise ModelFileError(f"expected a (C,H,W) or (N,C,H,W) image, got shape {image.shape}")
        channels = image.shape[-3]
        if channels != self.num_bands:
            raise ModelFileError(
                f"the model takes {self.num_bands} bands ({', '.join(self.spec.band_names)}), "
                f"the image has {channels}"
            )
        x = self.spec.dataset.normalize(image, valid)
        return torch.from_numpy(x).to(self.device)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized N x C x H x W -> float32 probabilities in [0, 1], N x K x H x W."""
        with torch.inference_mode():
            return probabilities(self.net(x.to(self.device, torch.float32)), self.spec.model)
