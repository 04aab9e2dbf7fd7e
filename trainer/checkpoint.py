"""The checkpoint a training run writes, and how a run resumes from it.

``last.pt`` in the run's folder (:mod:`trainer.rundir`; ``model.checkpoints/`` beside
``model.pt`` by default) is the checkpoint of a finished epoch (:func:`checkpoint_due`: a
run's first and last epochs, every epoch that improved the best val IoU, otherwise at most
once a minute): weights and optimizer states of the networks, every rank's RNG states, the
epoch, the best val IoU so far, the metrics history, and the config, network and dataset
it was trained with. Read with ``torch.load(weights_only=True)``; :func:`resume` continues
from it exactly (CPU runs repeat bit for bit). Version 1 checkpoints (which also held
LR-scheduler states, now derived from the epoch) resume too.

Only rank 0 writes; every rank restores its own RNG states.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geotiler.errors import ConfigError, ModelFileError
from geotiler.tiles.schema import DatasetInfo
from trainer.config import TrainConfig
from trainer.distributed import Dist, all_gather, main_decides
from trainer.modelfile import CHECKPOINT_FORMAT, MODEL_FORMAT, save_atomic, torch_load_reason
from trainer.rundir import CHECKPOINT_NAME, default_checkpoint_dir
from trainer.steps import Models

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 2
#: ``last.pt`` is written at most this often between the epochs that must have one
#: (:func:`checkpoint_due`): a 50 MB save of the small preset takes 0.06-0.09 s on 2 cores,
#: 10-15 % of the default recipe's 0.5 s epochs when written after every one.
CHECKPOINT_EVERY_S = 60.0


@dataclass
class Progress:
    """How far a run has come: what a checkpoint carries besides weights and RNG states."""

    epoch: int = 0  # epochs completed
    best_iou: float | None = None
    best_epoch: int | None = None  # 1-based
    history: list[dict[str, Any]] = field(default_factory=list)  # the metrics.csv rows
    images: int = 0  # training images seen, all epochs and ranks
    planned: int | None = None  # epochs that fit --max-minutes when fewer than --epochs


# --- RNG state ------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Torch, CUDA, numpy and Python RNG states as tensors and plain values."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": name, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        with contextlib.suppress(RuntimeError, IndexError):
            torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))


# --- checkpoints ----------------------------------------------------------------------------


def checkpoint_due(last_save: float | None, improved: bool, final: bool, ctx: Dist) -> bool:
    """Whether this epoch writes ``last.pt`` (every rank takes rank 0's answer).

    Always after a run's first epoch (``last_save`` None: an interrupted run can resume),
    its last (``final``) and every epoch that improved the best val IoU (``improved``: the
    best model just written must never be newer than the checkpoint, or a resumed run could
    replace it with a worse epoch); otherwise once :data:`CHECKPOINT_EVERY_S` have passed
    since the last save (``time.perf_counter()``). An interrupt loses at most that much.
    """
    due = (last_save is None or improved or final
           or time.perf_counter() - last_save >= CHECKPOINT_EVERY_S)
    return main_decides(due, ctx)


def save_checkpoint(
    ckpt_dir: Path,
    models: Models,
    progress: Progress,
    config: TrainConfig,
    info: DatasetInfo,
    ctx: Dist,
) -> None:
    """Write ``last.pt`` after an epoch. Every rank calls it (their RNG states are
    gathered); rank 0 writes, atomically. Raises OutputError if it cannot be written."""
    rngs = all_gather(rng_state(), ctx)
    if not ctx.is_main:
        return
    state = {
        "format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION,
        "epoch": progress.epoch,
        "config": json.dumps(config.to_dict()),
        "model": json.dumps(models.config.to_dict()),
        "dataset": json.dumps(info.to_json()),
        "G": models.g.state_dict(), "opt_G": models.opt_g.state_dict(),
        "D": models.d.state_dict() if models.d is not None else {},
        "opt_D": models.opt_d.state_dict() if models.opt_d is not None else {},
        "rng": rngs,
        "best_iou": progress.best_iou, "best_epoch": progress.best_epoch,
        "history": json.dumps(progress.history), "images": progress.images,
        "planned": progress.planned,
    }
    save_atomic(state, ckpt_dir / CHECKPOINT_NAME)


def load_checkpoint(path: Path | str) -> dict[str, Any]:
    """A checkpoint written by :func:`save_checkpoint` (never runs code from the file).

    ``path`` is the file or its directory.

    Raises:
        ConfigError: it does not exist (a wrong ``--resume`` path, exit 2).
        ModelFileError: it is unreadable, not a checkpoint (a model file is named as such)
            or from a newer geotiler (a bad file, exit 1, as for ``--init``).
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise ConfigError(f"--resume: checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ModelFileError(f"--resume: {path} is not a readable checkpoint: "
                             f"{torch_load_reason(err)}") from None
    if isinstance(state, dict) and state.get("format") == MODEL_FORMAT:
        raise ModelFileError(
            f"--resume: {path} is a model file, not a checkpoint: resume from the "
            f"checkpoint beside it ({default_checkpoint_dir(path) / CHECKPOINT_NAME})")
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ModelFileError(f"--resume: {path} is not a geotiler training checkpoint")
    if state.get("format_version", 0) > CHECKPOINT_VERSION:
        raise ModelFileError(
            f"--resume: {path} was written by a newer geotiler; upgrade geotiler")
    return state


#: Settings a resumed run may change without a word: how long and how fast it runs, where
#: and how it logs (the rest should be "the same options", ``train --help``).
_FREE_ON_RESUME = {"epochs", "max_minutes", "max_steps", "workers", "device", "init",
                   "wall_reach"}  # wall_reach: derived from --wall-weight, not an option


def _check_resume(state: dict[str, Any], info: DatasetInfo, models: Models, path: Path,
                  config: TrainConfig) -> None:
    """ConfigError unless the checkpoint was trained on such tiles (the same normalization:
    other tiles are fine-tuning, ``--init``) with such a network; a warning naming the
    training settings that differ from the run's."""
    saved_info = json.loads(state["dataset"])
    diffs = info.network_differences(saved_info)
    same_tiles = "mean" not in saved_info or (  # version 1 kept no normalization
        np.allclose(info.mean, saved_info["mean"], rtol=1e-6)
        and np.allclose(info.std, saved_info["std"], rtol=1e-6))
    if not diffs and not same_tiles:
        diffs = [f"band mean {[round(m, 1) for m in saved_info['mean']]}, now "
                 f"{[round(m, 1) for m in info.mean]}"]
    if diffs:
        raise ConfigError(
            f"--resume: checkpoint {path} was trained on different tiles ({'; '.join(diffs)}); "
            "resume with the dataset it was trained on, or start a new run (--init with its "
            "model file trains its weights on these tiles)"
        )
    saved_model = json.loads(state["model"])
    now = models.config.to_dict()
    diffs = [f"{k}: checkpoint {saved_model.get(k)!r}, now {v!r}"
             for k, v in now.items() if saved_model.get(k) != v]
    if diffs:
        raise ConfigError(
            f"--resume: checkpoint {path} holds a different network ({'; '.join(diffs)}); "
            "pass the same --arch/--preset/--ngf/--ndf/--num-downs as the run that wrote it"
        )
    saved = json.loads(state.get("config", "{}"))
    changed = [f"{k} {saved[k]!r} -> {v!r}" for k, v in config.to_dict().items()
               if k in saved and k not in _FREE_ON_RESUME and saved[k] != v]
    if changed:
        log.warning("resuming with other settings than the run's (%s): the run no longer "
                    "repeats an uninterrupted one", ", ".join(changed))


def resume(state: dict[str, Any], path: Path, models: Models, info: DatasetInfo,
           config: TrainConfig, ctx: Dist) -> Progress:
    """Load ``state``, the checkpoint read from ``path`` (:func:`load_checkpoint`), into
    ``models`` and this rank's RNGs; its progress.

    Raises ConfigError if it was trained on other tiles or another network. With a
    different number of processes the random streams are re-seeded (the run goes on, but
    no longer repeats an uninterrupted one exactly).
    """
    _check_resume(state, info, models, path, config)
    models.g.load_state_dict(state["G"])
    models.opt_g.load_state_dict(state["opt_G"])
    if models.d is not None and models.opt_d is not None:
        models.d.load_state_dict(state["D"])
        models.opt_d.load_state_dict(state["opt_D"])
    progress = Progress(
        epoch=int(state["epoch"]), best_iou=state.get("best_iou"),
        best_epoch=state.get("best_epoch"), history=json.loads(state["history"]),
        images=int(state.get("images", 0)), planned=state.get("planned"),
    )
    rngs = state["rng"]
    if len(rngs) == ctx.world_size:
        set_rng_state(rngs[ctx.rank])
    else:
        log.warning("resuming with %d processes instead of %d: random streams are re-seeded",
                    ctx.world_size, len(rngs))
        seed_everything(config.seed + 1000 * progress.epoch + ctx.rank)
    if ctx.is_main:
        log.info("resuming from %s after epoch %d", path, progress.epoch)
    if progress.epoch >= config.epochs:
        log.warning("the checkpoint already has %d epochs (--epochs %d): nothing to do; "
                    "raise --epochs to train on", progress.epoch, config.epochs)
    return progress


def resumed_network(config: TrainConfig, state: dict[str, Any]) -> TrainConfig:
    """``config`` with the generator and discriminator sizes it leaves to the preset
    (``None``) taken from the ``--resume`` checkpoint ``state``, so that the command the
    interrupt advice prints (``--resume`` alone) rebuilds the run's network, ``--init``'s
    included."""
    return config.with_sizes(json.loads(state.get("config", "{}")))
