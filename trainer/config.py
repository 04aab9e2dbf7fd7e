"""Training settings: the one place their defaults live.

:class:`ModelConfig` says which network to build (and is saved in the model file so that
``predict`` rebuilds the network from the file alone); :class:`TrainConfig` says how to
train it. The CLI takes its option defaults from these classes and its choices from the
``Literal`` types below; the resolved config is written beside every checkpoint.

Presets (:data:`PRESETS`) are the starting points: ``full`` is the pix2pix paper's network
(U-Net with 8 levels, 64 filters, 70x70 PatchGAN), ``small`` a narrow 5-level U-Net that
trains in minutes on a couple of CPU cores. Explicit settings override the preset.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any, Literal, get_args

from geotiler.device import DEVICES, PRECISIONS, Device, Precision
from geotiler.errors import ConfigError

Arch = Literal["pix2pix", "unet"]
Preset = Literal["small", "full"]
Norm = Literal["batch", "instance"]

ARCHS: tuple[Arch, ...] = get_args(Arch)
PRESET_NAMES: tuple[Preset, ...] = get_args(Preset)
Recon = Literal["bce-dice", "l1"]
RECONS: tuple[Recon, ...] = get_args(Recon)
NORMS: tuple[Norm, ...] = get_args(Norm)


@dataclass(frozen=True)
class ModelConfig:
    """The networks: everything needed to rebuild them, nothing about training.

    Attributes:
        arch: ``pix2pix`` (U-Net generator with a tanh output trained against a PatchGAN
            discriminator with an L1 term) or ``unet`` (the same generator trained alone,
            sigmoid outputs, BCE + Dice loss).
        in_channels: input bands (set from the dataset).
        out_channels: target channels (set from the dataset's mask channels).
        ngf: filters of the generator's first level (doubling per level up to 8x).
        ndf: filters of the discriminator's first layer.
        num_downs: levels of the U-Net; the tile size must be divisible by 2**num_downs
            (256 px allows up to 8).
        n_layers_d: strided layers of the PatchGAN (3 gives 70x70 receptive fields).
        norm: normalization layers (``batch`` as in the paper, ``instance`` alternatively).
        use_dropout: dropout 0.5 in the generator's three decoder blocks next to the
            innermost one (as in the paper's unet_256; the small preset's too). Training
            sets it for pix2pix only (:meth:`TrainConfig.model_config`).
        full_res: channels of a full-resolution branch (0: none, the paper's generator).
            pix2pix's U-Net has no layer at the input's resolution: its first convolution
            has stride 2 and its last is a transposed one, so every output pixel comes from
            half-resolution features, and edges a pixel or two wide (a 10 px house at 1 m)
            blur. With ``full_res`` C, a 3x3 convolution of the input (C filters) is
            concatenated with the U-Net's outputs, and two more convolutions (3x3, then
            1x1, the last starting at zero) give a correction added to them
            (:class:`trainer.networks.FullResUnet`).
    """

    arch: Arch = "unet"
    in_channels: int = 3
    out_channels: int = 2
    ngf: int = 64
    ndf: int = 64
    num_downs: int = 8
    n_layers_d: int = 3
    norm: Norm = "batch"
    use_dropout: bool = True
    full_res: int = 0

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ConfigError(f"--arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        if self.norm not in NORMS:
            raise ConfigError(f"norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        for name in ("in_channels", "out_channels", "ngf", "ndf", "num_downs", "n_layers_d"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                flag = name.replace("_", "-")
                raise ConfigError(f"--{flag} must be a positive integer, got {value!r}")
        if self.num_downs < 2:
            raise ConfigError(f"--num-downs must be at least 2, got {self.num_downs}")
        if not isinstance(self.full_res, int) or self.full_res < 0:
            raise ConfigError(f"--full-res must be >= 0, got {self.full_res!r}")

    @property
    def output_activation(self) -> Literal["tanh", "sigmoid"]:
        """The generator's last layer: ``tanh`` for pix2pix, none (logits, read through a
        sigmoid) for the plain U-Net; see :func:`trainer.networks.probabilities`."""
        return "tanh" if self.arch == "pix2pix" else "sigmoid"

    def check_tile_size(self, tile_size: int) -> None:
        """ConfigError unless tiles of ``tile_size`` px pass through ``num_downs`` levels."""
        factor = 2**self.num_downs
        if tile_size % factor:
            best = max_num_downs(tile_size)
            if factor > 2048:  # re-tiling to 4096 px and more is not a useful hint
                raise ConfigError(f"--num-downs {self.num_downs} halves a tile "
                                  f"{self.num_downs} times; tiles of {tile_size} px allow "
                                  f"--num-downs {best} or less")
            raise ConfigError(
                f"--num-downs {self.num_downs} needs tiles whose size is a multiple of "
                f"{factor} px, but the tiles are {tile_size} px; use --num-downs {best} or "
                f"less (or re-tile with --size a multiple of {factor})"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown model settings: {', '.join(sorted(unknown))}")
        return cls(**data)


def max_num_downs(tile_size: int) -> int:
    """The deepest U-Net a tile of ``tile_size`` px allows (256 -> 8)."""
    levels = 0
    while tile_size % 2 ** (levels + 1) == 0:
        levels += 1
    return levels


# The presets: model widths/depths and the training settings that go with them. A value
# given explicitly (CLI option or TrainConfig field) wins over the preset's.
PRESETS: dict[Preset, dict[str, Any]] = {
    # Narrow and shallow: ~15-20 images/s on 2 CPU cores for the U-Net at 256 px.
    "small": {"ngf": 32, "ndf": 32, "num_downs": 5, "batch_size": 4},
    # The pix2pix paper's unet_256 + 70x70 PatchGAN, batch size 1.
    "full": {"ngf": 64, "ndf": 64, "num_downs": 8, "batch_size": 1},
}


#: The default weight of the walls between touching buildings in the contour channel's
#: BCE (``TrainConfig.wall_weight``; U-Net's w0 = 10, Ronneberger et al. 2015).
DEFAULT_WALL_WEIGHT = 10.0


# Adam learning rate by architecture. pix2pix keeps the paper's 2e-4; for the U-Net 1e-3 gave
# the best val IoU on the Massachusetts scene (0.53 against 0.44 with 2e-4; README, "Training
# recipes").
DEFAULT_LR: dict[Arch, float] = {"pix2pix": 2e-4, "unet": 1e-3}


@dataclass(frozen=True)
class TrainConfig:
    """How to train: optimization, data, devices, outputs.

    ``None`` fields take the preset's value (see :meth:`resolved`).

    Attributes:
        arch: see :class:`ModelConfig`.
        preset: ``small`` (fast on CPU) or ``full`` (the paper's networks).
        epochs: the most passes over the training tiles; with ``max_minutes`` (30 by
            default) the run trains as many as fit the budget. 500 with 30 minutes: on the
            Massachusetts scene tiled with the defaults (11 train tiles of 256 px), 100
            epochs (2 min) reached test pixel IoU 0.519 and building F1 0.552, a 10-minute
            run (675 epochs) 0.578 and 0.736 (README "Results on real imagery"); a larger
            dataset is stopped by the budget instead.
        batch_size: tiles per step and process (``None``: the preset's).
        lr: Adam learning rate (generator and discriminator alike); ``None``: the
            architecture's default in :data:`DEFAULT_LR`.
        beta1: Adam beta1 (0.5 as in pix2pix).
        recon: the reconstruction term of the pix2pix generator loss: ``bce-dice``
            (BCE + Dice on p = (tanh + 1) / 2; the default: with masks ~5 % building, L1's
            equal per-pixel gradient lets background outvote buildings ~17:1 and pix2pix
            collapses to "no building", README "Results") or ``l1`` (the paper's, for a
            faithful reproduction of the seed method).
        lambda_recon: weight of the reconstruction term (pix2pix's lambda, 100).
        ngf, ndf, num_downs: network size (``None``: the preset's).
        full_res: channels of the generator's full-resolution branch
            (:attr:`ModelConfig.full_res`; 0: none, the paper's U-Net).
        wall_weight: extra BCE weight of the contour channel on the walls between touching
            buildings (:func:`trainer.losses.wall_weight`; U-Net's border weights; 0: off).
            Plain U-Net on footprint + contour tiles only; ``None``:
            :data:`DEFAULT_WALL_WEIGHT` there, 0 elsewhere. Chosen on val (README): on
            Massachusetts and Banepa (two seeds each) it raised val building F1 by 0.017
            and 0.049 and changed val pixel IoU by -0.013 and -0.004 (seed noise: 0.03).
        wall_reach: px from the ground beyond which a contour pixel counts as a wall
            (``None``: the tiles' contour width, which outlines extend up to inside a
            building).
        lr_decay: decay the learning rate linearly to zero over the second half of the
            epochs (pix2pix's schedule).
        workers: DataLoader worker processes per training process (0 reads in-process);
            ``None``: 0 on CPU, where loader processes compete with torch for the cores
            (17% slower on 2 cores, benchmarks/bench_train.py), up to 4 with CUDA.
        seed: seeds weights, data order and augmentation; CPU runs repeat exactly.
        init: a model file whose generator weights start this run (fine-tuning from a
            pretrained model), or ``"synthetic"``: the weights shipped with geotiler,
            pretrained on our synthetic scenes (:mod:`trainer.pretrained`); ``None``:
            N(0, 0.02).
        device: ``auto`` uses CUDA when present.
        precision: ``fp32``, ``bf16`` (bfloat16 autocast: forward and loss in bf16, weights
            and optimizer in fp32) or ``auto``: bf16 where the device has it (CPUs with
            AVX-512 BF16 or AMX, CUDA GPUs from Ampere on), else fp32. On this project's
            2-core CPU bf16 trains the small U-Net 1.7x faster (README, precision table).
        augment: flips, 90-degree rotations, colour jitter, scale jitter, blur and noise on
            training tiles (the last four set by the fields below).
        jitter: strength of the colour jitter (brightness shift and contrast factor, in
            units of the band's standard deviation).
        scale_jitter: zoom range of the augmentation: tiles are zoomed by a factor
            log-uniform in [1 / (1 + s), 1 + s], so buildings are seen at several apparent
            GSDs (0: off).
        blur: largest Gaussian blur sigma (px) applied to half the training tiles (0: off).
        noise: std of the Gaussian noise (normalized units) added to half the training
            tiles (0: off). The defaults of these three were chosen on val: on the
            Massachusetts tiles (128 px, 100 epochs, seed 0) they raised val pixel IoU from
            0.507 to 0.528 and val building F1@0.5 from 0.644 to 0.755, and the best epoch
            moved from 37 to 90 (less overfitting; README "Results on real imagery").
        max_steps: cap on training steps per epoch (``None``: the whole split).
        max_minutes: wall-clock budget, 30 minutes by default (the budget a CPU run of
            the default recipe must fit; ``None``: no limit). After each epoch the run
            estimates how many epochs (at most ``epochs``) fit the budget and the
            learning-rate schedule decays over those, so the run ends at a low learning
            rate; no new epoch starts once the budget is spent. A plan that binds depends
            on the machine's speed, so such runs no longer repeat bit for bit; when all
            ``epochs`` fit, the run follows them exactly.
        boundary_tolerance: tolerance in pixels of the boundary F-score.
        shuffle_buffer: tiles each data reader shuffles among (besides shard order).
        threshold: probability above which a pixel counts as building in the metrics.
    """

    arch: Arch = "unet"
    preset: Preset = "small"
    epochs: int = 500
    batch_size: int | None = None
    lr: float | None = None
    beta1: float = 0.5
    recon: Recon = "bce-dice"
    lambda_recon: float = 100.0
    ngf: int | None = None
    ndf: int | None = None
    num_downs: int | None = None
    full_res: int = 0
    wall_weight: float | None = None
    wall_reach: int | None = None
    lr_decay: bool = True
    workers: int | None = None
    seed: int = 0
    init: str | None = None
    device: Device = "auto"
    precision: Precision = "auto"
    augment: bool = True
    jitter: float = 0.1
    scale_jitter: float = 0.25
    blur: float = 1.0
    noise: float = 0.1
    max_steps: int | None = None
    max_minutes: float | None = 30.0
    boundary_tolerance: int = 2
    shuffle_buffer: int = 128
    threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ConfigError(f"--preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        if self.arch not in ARCHS:
            raise ConfigError(f"--arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        if self.device not in DEVICES:
            raise ConfigError(f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, "
                              f"got {self.precision!r}")
        positive = {"epochs": self.epochs, "batch_size": self.batch_size,
                    "ngf": self.ngf, "ndf": self.ndf, "num_downs": self.num_downs,
                    "max_steps": self.max_steps}
        for name, value in positive.items():
            if value is not None and value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ConfigError(f"--max-minutes must be positive, got {self.max_minutes}")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"--lr must be a positive number, got {self.lr}")
        if not 0 <= self.beta1 < 1:
            raise ConfigError(f"beta1 must be in [0, 1), got {self.beta1}")
        if self.recon not in RECONS:
            raise ConfigError(f"--recon must be one of {', '.join(RECONS)}, got {self.recon!r}")
        if self.lambda_recon < 0:
            raise ConfigError(f"--lambda-recon must be >= 0, got {self.lambda_recon}")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"--workers must be >= 0, got {self.workers}")
        if self.boundary_tolerance < 0:
            raise ConfigError(f"boundary tolerance must be >= 0 px, got {self.boundary_tolerance}")
        if self.shuffle_buffer < 1:
            raise ConfigError(f"shuffle buffer must be >= 1, got {self.shuffle_buffer}")
        if not 0 < self.threshold < 1:
            raise ConfigError(f"threshold must be in (0, 1), got {self.threshold}")
        if self.wall_reach is not None and self.wall_reach < 1:
            raise ConfigError(f"wall reach must be >= 1 px, got {self.wall_reach}")
        for name in ("jitter", "scale_jitter", "blur", "noise", "wall_weight"):
            if getattr(self, name) is not None and not getattr(self, name) >= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, "
                                  f"got {getattr(self, name)}")

    def loader_workers(self, device_type: str) -> int:
        """DataLoader processes for a run on ``device_type`` (see ``workers``)."""
        if self.workers is not None:
            return self.workers
        if device_type != "cuda":
            return 0
        return min(4, max(1, (os.cpu_count() or 2) // 2))

    def _preset_value(self, name: str) -> Any:
        value = getattr(self, name)
        return PRESETS[self.preset][name] if value is None else value

    @property
    def effective_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.arch]

    @property
    def effective_batch_size(self) -> int:
        return int(self._preset_value("batch_size"))

    def model_config(self, in_channels: int, out_channels: int) -> ModelConfig:
        """The network this config trains, for data with these channel counts."""
        return ModelConfig(
            arch=self.arch,
            in_channels=in_channels,
            out_channels=out_channels,
            ngf=int(self._preset_value("ngf")),
            ndf=int(self._preset_value("ndf")),
            num_downs=int(self._preset_value("num_downs")),
            full_res=self.full_res,
            # pix2pix's dropout is its noise source (the paper has no z); the plain U-Net
            # is trained without it, as its figures in README were measured.
            use_dropout=self.arch == "pix2pix",
        )

    def with_sizes(self, sizes: dict[str, Any]) -> TrainConfig:
        """A copy with the network sizes it leaves to the preset (``ngf``, ``ndf``,
        ``num_downs`` of ``None``) taken from ``sizes`` (another run's model or config);
        sizes given explicitly, and names ``sizes`` lacks, stay as they are."""
        return dataclasses.replace(self, **{
            name: sizes[name] for name in ("ngf", "ndf", "num_downs")
            if getattr(self, name) is None and sizes.get(name) is not None})

    def resolved(self) -> TrainConfig:
        """A copy with every preset-dependent ``None`` filled in."""
        return dataclasses.replace(
            self,
            batch_size=self.effective_batch_size,
            lr=self.effective_lr,
            ngf=int(self._preset_value("ngf")),
            ndf=int(self._preset_value("ndf")),
            num_downs=int(self._preset_value("num_downs")),
            full_res=self.full_res,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
