"""Where a training process runs: its device, its rank, and what the ranks agree on.

:func:`setup_distributed` picks the device (:func:`geotiler.device.resolve_device`) and,
under a ``torchrun`` launch (``RANK``/``WORLD_SIZE`` set), joins the process group (gloo on
CPU, NCCL on GPU). A single process is a world of one: every helper here is then a no-op,
so the training code reads the same either way. Only rank 0 (:attr:`Dist.is_main`) writes
files and logs progress.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from geotiler.device import resolve_device, resolve_precision
from geotiler.errors import ConfigError


@dataclass
class Dist:
    """This process's place in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False  # this call started the process group and ends it
    precision: str = "fp32"  # resolved: "fp32" or "bf16" (geotiler.device.resolve_precision)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        raise ConfigError(f"environment variable {name} is not an integer") from None


def setup_distributed(device: str, precision: str = "fp32") -> Dist:
    """Pick the device and precision, and join the process group when launched by torchrun.

    ``device`` is one of :data:`geotiler.device.DEVICES`, ``precision`` one of
    :data:`geotiler.device.PRECISIONS`. Raises ConfigError for ``cuda`` without a GPU,
    ``bf16`` without native bfloat16, or a malformed ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``.
    """
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    use_cuda = resolve_device(device) == "cuda"
    if use_cuda:
        dev = torch.device("cuda", local_rank if world > 1 else torch.cuda.current_device())
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    owns = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
        owns = True
    if world > 1 and not use_cuda:  # share the cores between the processes of this host
        local_world = _env_int("LOCAL_WORLD_SIZE", world)
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    return Dist(rank, world, local_rank, dev, owns, resolve_precision(precision, dev.type))


def teardown_distributed(ctx: Dist) -> None:
    """Leave the process group if :func:`setup_distributed` joined it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce(tensor: torch.Tensor, ctx: Dist, op: Any = None) -> torch.Tensor:
    """``tensor`` summed (or reduced by ``op``) over the ranks, on CPU; itself in one process."""
    if not ctx.distributed:
        return tensor
    backend_tensor = tensor.to(ctx.device)
    dist.all_reduce(backend_tensor, op=op or dist.ReduceOp.SUM)
    return backend_tensor.cpu()


def all_gather(obj: Any, ctx: Dist) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` in one process."""
    if not ctx.distributed:
        return [obj]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def main_value(value: int, ctx: Dist) -> int:
    """Rank 0's ``value`` on every rank (so all ranks take the same branch or plan)."""
    tensor = torch.tensor([int(value)], dtype=torch.int64, device=ctx.device)
    if ctx.distributed:
        dist.broadcast(tensor, src=0)
    return int(tensor.item())


def main_decides(flag: bool, ctx: Dist) -> bool:
    """Rank 0's ``flag`` on every rank (so all ranks take the same branch)."""
    return bool(main_value(int(flag), ctx))


def barrier(ctx: Dist) -> None:
    """Wait for every rank (no-op in one process)."""
    if ctx.distributed:
        dist.barrier()


def batches(loader: Iterable[Any], ctx: Dist, max_steps: int | None) -> Iterator[Any]:
    """Batches until the loader (of any rank) runs dry or ``max_steps`` are taken.

    Under DDP every rank must take the same number of steps, so ranks agree at each step
    (a one-integer all-reduce) whether all of them still have data.
    """
    it = iter(loader)
    steps = 0
    while max_steps is None or steps < max_steps:
        batch = next(it, None)
        if ctx.distributed:
            flag = torch.tensor([0 if batch is None else 1], dtype=torch.int64)
            if int(all_reduce(flag, ctx, dist.ReduceOp.MIN)[0]) == 0:
                return
        if batch is None:
            return
        steps += 1
        yield batch


def wrap(net: nn.Module, ctx: Dist) -> nn.Module:
    """``net`` in ``DistributedDataParallel`` when there are several ranks, else itself."""
    if not ctx.distributed:
        return net
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(net, device_ids=ids)


def unwrap(net: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` wrapper (or ``net`` itself)."""
    return net.module if isinstance(net, DistributedDataParallel) else net


def no_sync(net: nn.Module) -> contextlib.AbstractContextManager[Any]:
    """Skip DDP's gradient all-reduce for backward passes inside (gradients accumulate)."""
    return net.no_sync() if isinstance(net, DistributedDataParallel) else contextlib.nullcontext()


def autocast(ctx: Dist, precision: str) -> contextlib.AbstractContextManager[Any]:
    """bfloat16 autocast on ``ctx.device`` when ``precision`` (resolved) is ``bf16``."""
    if precision == "bf16":
        return torch.autocast(ctx.device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
