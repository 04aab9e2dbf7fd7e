"""The networks of pix2pix (Isola et al. 2017), in plain torch.

The architecture follows junyanz/pytorch-CycleGAN-and-pix2pix ``models/networks.py``: a
U-Net generator built recursively from :class:`UnetSkipConnectionBlock` (each block wraps
the next deeper one and concatenates its input to its output), and the ``n_layers``
PatchGAN :class:`NLayerDiscriminator` (70x70 receptive fields with 3 layers). Weights are
initialised from N(0, 0.02) (:func:`init_weights`). Networks are built only from a
:class:`~trainer.config.ModelConfig` (:func:`build_generator`, :func:`build_discriminator`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn

from trainer.config import ModelConfig, Norm

NormFactory = Callable[[int], nn.Module]


def norm_layer(kind: Norm) -> NormFactory:
    """A factory of normalization layers of ``kind`` for a channel count."""
    if kind == "batch":
        return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)


class UnetSkipConnectionBlock(nn.Module):
    """One U-Net level: down-sample, the deeper levels, up-sample, concat with the input.

    ``X -------------------identity------------------- X``
    ``  |-- downsampling -- |submodule| -- upsampling --|``
    """

    def __init__(
        self,
        outer_nc: int,
        inner_nc: int,
        *,
        input_nc: int | None = None,
        submodule: nn.Module | None = None,
        outermost: bool = False,
        innermost: bool = False,
        norm: NormFactory,
        use_bias: bool,
        use_dropout: bool = False,
        final: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.outermost = outermost
        input_nc = outer_nc if input_nc is None else input_nc
        downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
        downrelu = nn.LeakyReLU(0.2, True)
        downnorm = norm(inner_nc)
        uprelu = nn.ReLU(True)
        upnorm = norm(outer_nc)

        layers: list[nn.Module]
        if outermost:
            if submodule is None:
                raise ValueError("the outermost block needs a submodule")
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1)
            up: list[nn.Module] = [uprelu, upconv]
            if final is not None:
                up.append(final)
            layers = [downconv, submodule, *up]
        elif innermost:
            upconv = nn.ConvTranspose2d(
                inner_nc, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias
            )
            layers = [downrelu, downconv, uprelu, upconv, upnorm]
        else:
            if submodule is None:
                raise ValueError("an intermediate block needs a submodule")
            upconv = nn.ConvTranspose2d(
                inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias
            )
            layers = [downrelu, downconv, downnorm, submodule, uprelu, upconv, upnorm]
            if use_dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """U-Net of ``num_downs`` levels; an input of 2**num_downs px becomes 1x1 at the bottom.

    Level ``i`` (0 outermost) has ``ngf * min(2**i, 8)`` filters; with dropout on, the
    (up to) three decoder blocks next to the innermost one carry dropout 0.5, as in
    pix2pix's unet_256 (levels 4-6 of 8); at 5 levels (the small preset) levels 1-3.
    ``final`` is the output activation (``tanh`` for pix2pix, none for the logits of the
    plain U-Net).
    """

    def __init__(
        self,
        input_nc: int,
        output_nc: int,
        num_downs: int,
        ngf: int = 64,
        *,
        norm: Norm = "batch",
        use_dropout: bool = False,
        final: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if num_downs < 2:
            raise ValueError(f"a U-Net needs at least 2 levels, got {num_downs}")
        factory = norm_layer(norm)
        use_bias = norm == "instance"

        def width(level: int) -> int:
            return ngf * min(2**level, 8)

        innermost = num_downs - 1
        block: nn.Module = UnetSkipConnectionBlock(
            width(innermost - 1), width(innermost), innermost=True, norm=factory, use_bias=use_bias
        )
        for level in range(innermost - 1, 0, -1):
            block = UnetSkipConnectionBlock(
                width(level - 1),
                width(level),
                submodule=block,
                norm=factory,
                use_bias=use_bias,
                use_dropout=use_dropout and level >= max(1, innermost - 3),
            )
        self.model = UnetSkipConnectionBlock(
            output_nc,
            ngf,
            input_nc=input_nc,
            submodule=block,
            outermost=True,
            norm=factory,
            use_bias=use_bias,
            final=final,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class FullResUnet(nn.Module):
    """The U-Net generator plus a residual branch at the input's resolution
    (``ModelConfig.full_res``).

    pix2pix's U-Net down-samples in its first layer and up-samples in its last, so no
    feature is computed at full resolution. Here a 3x3 convolution of the input
    (``channels`` filters, norm, ReLU) is concatenated with the U-Net's outputs, and
    3x3 conv -> norm -> ReLU -> 1x1 conv gives a correction added to them (then
    ``final``): the full-resolution skip of the usual U-Net (Ronneberger et al. 2015). The
    last convolution starts at zero (:meth:`start_as_unet`), so training starts from the
    paper's U-Net exactly. Input (N, in, H, W) -> output (N, out, H, W).
    """

    def __init__(self, input_nc: int, output_nc: int, num_downs: int, ngf: int, channels: int,
                 *, norm: Norm = "batch", use_dropout: bool = False,
                 final: nn.Module | None = None) -> None:
        super().__init__()
        factory = norm_layer(norm)
        use_bias = norm == "instance"
        self.unet = UnetGenerator(input_nc, output_nc, num_downs, ngf, norm=norm,
                                  use_dropout=use_dropout)
        self.stem = nn.Sequential(
            nn.Conv2d(input_nc, channels, kernel_size=3, padding=1, bias=use_bias),
            factory(channels), nn.ReLU(True))
        self.refine = nn.Sequential(
            nn.Conv2d(channels + output_nc, channels, kernel_size=3, padding=1, bias=use_bias),
            factory(channels), nn.ReLU(True),
            nn.Conv2d(channels, output_nc, kernel_size=1))
        self.final = final if final is not None else nn.Identity()

    def start_as_unet(self) -> None:
        """Zero the correction's last convolution: the network then computes the U-Net."""
        last = self.refine[-1]
        assert isinstance(last, nn.Conv2d)
        nn.init.zeros_(last.weight)
        if last.bias is not None:
            nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        coarse = self.unet(x)
        return self.final(coarse + self.refine(torch.cat([coarse, self.stem(x)], 1)))


class NLayerDiscriminator(nn.Module):
    """PatchGAN: classifies each overlapping patch (70x70 for 3 layers) as real or fake.

    Outputs logits, one per patch: 30x30 for a 256 px input with ``n_layers`` 3.
    """

    def __init__(
        self, input_nc: int, ndf: int = 64, n_layers: int = 3, *, norm: Norm = "batch"
    ) -> None:
        super().__init__()
        factory = norm_layer(norm)
        use_bias = norm == "instance"
        kw, padw = 4, 1
        layers: list[nn.Module] = [
            nn.Conv2d(input_nc, ndf, kernel_size=kw, stride=2, padding=padw),
            nn.LeakyReLU(0.2, True),
        ]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, kernel_size=kw, stride=2, padding=padw,
                          bias=use_bias),
                factory(ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        prev, mult = mult, min(2**n_layers, 8)
        layers += [
            nn.Conv2d(ndf * prev, ndf * mult, kernel_size=kw, stride=1, padding=padw,
                      bias=use_bias),
            factory(ndf * mult),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * mult, 1, kernel_size=kw, stride=1, padding=padw),
        ]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def init_weights(net: nn.Module, gain: float = 0.02) -> nn.Module:
    """pix2pix's "normal" init: conv weights N(0, gain), norm weights N(1, gain), biases 0."""

    def init(m: nn.Module) -> None:
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)

    net.apply(init)
    return net


def build_generator(config: ModelConfig, *, init: bool = True) -> nn.Module:
    """The generator of ``config``: tanh outputs for pix2pix, logits for the plain U-Net;
    with ``config.full_res`` a :class:`FullResUnet`, else the paper's :class:`UnetGenerator`."""
    final = nn.Tanh() if config.output_activation == "tanh" else None
    net: nn.Module
    if config.full_res:
        net = FullResUnet(config.in_channels, config.out_channels, config.num_downs,
                          config.ngf, config.full_res, norm=config.norm,
                          use_dropout=config.use_dropout, final=final)
    else:
        net = UnetGenerator(config.in_channels, config.out_channels, config.num_downs,
                            config.ngf, norm=config.norm, use_dropout=config.use_dropout,
                            final=final)
    if init:
        init_weights(net)
        if isinstance(net, FullResUnet):
            net.start_as_unet()
    return net


def probabilities(output: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """Raw generator outputs (N,K,H,W) -> float32 probabilities in [0, 1] of that shape.

    The one reading of the network's output, for validation and inference alike: tanh
    outputs (pix2pix) are mapped affinely from [-1, 1], logits (plain U-Net) go through a
    sigmoid.
    """
    out = output.float()
    if config.output_activation == "tanh":
        return ((out + 1.0) * 0.5).clamp(0.0, 1.0)
    return torch.sigmoid(out)


def build_discriminator(config: ModelConfig, *, init: bool = True) -> NLayerDiscriminator:
    """The conditional PatchGAN of ``config``: it sees input bands and target together."""
    net = NLayerDiscriminator(
        config.in_channels + config.out_channels, config.ndf, config.n_layers_d, norm=config.norm
    )
    if init:
        init_weights(net)
    return net


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
