"""The run's folder beside its model file (``model.checkpoints/``) and the files in it
besides the checkpoint (:mod:`trainer.checkpoint`): where it is, what a run may write
there and over, the staged best model of a run that replaces an older one,
``train_config.json``, ``metrics.csv``, and what to say after a run stopped early.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geotiler import __version__
from geotiler.atomic import atomic_path, write_json_atomic, write_text_atomic
from geotiler.errors import OutputError
from geotiler.io import replaced_input

if TYPE_CHECKING:
    from trainer.checkpoint import Progress

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "last.pt"
METRICS_NAME = "metrics.csv"
CONFIG_NAME = "train_config.json"
#: The best epoch's model file while a run replaces an existing ``--out`` (:func:`model_target`).
STAGED_NAME = "best.pt"


def default_checkpoint_dir(out_path: Path | str) -> Path:
    """Checkpoints beside the model file: ``model.pt`` -> ``model.checkpoints/``."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.stem + ".checkpoints")


def check_outputs(out_path: Path, ckpt_dir: Path, resume: Path | None, overwrite: bool,
                  tiles_dirs: Sequence[Path] = ()) -> None:
    """OutputError if the run would clobber a model file or an earlier run's checkpoint,
    would write into one of its tile datasets (even with ``overwrite``), or if the model
    file's or the checkpoints' folder cannot be made (under a file, or in a folder that is
    not writable)."""
    if clash := replaced_input([out_path], [resume, ckpt_dir]):
        raise OutputError(f"--out {out_path} is {clash[1]} or inside it, where the run's "
                          "checkpoints go: give a model file elsewhere")
    if clash := replaced_input([out_path, ckpt_dir], tiles_dirs):
        raise OutputError(f"{clash[0]} is inside the tile dataset {clash[1]} (its files "
                          "would be overwritten; `tile --overwrite` replaces the folder): "
                          "write the model elsewhere")
    if out_path.is_dir():
        raise OutputError(f"--out {out_path} is a directory; give a file name like model.pt")
    last = ckpt_dir / CHECKPOINT_NAME
    if out_path.exists() and not (overwrite or resume):
        go_on = f"continue its run with --resume {last} or " if last.exists() else ""
        raise OutputError(f"--out {out_path} exists; {go_on}pass --overwrite to replace it")
    for folder in (out_path.parent, ckpt_dir):  # refused before any training, not after
        existing = next(p for p in (folder, *folder.parents) if p.exists())
        if not existing.is_dir():
            raise OutputError(f"cannot write {folder}: {existing} is a file, not a folder")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise OutputError(f"cannot write {folder}: {existing} is not writable")
    if last.exists() and not (overwrite or resume):
        raise OutputError(
            f"{ckpt_dir} holds the checkpoint of an earlier run; pass --resume {last} to "
            "continue it or --overwrite to start over"
        )


def model_target(out_path: Path, ckpt_dir: Path, resume: Path | None) -> Path:
    """Where a run saves its best epoch: ``--out`` itself, or ``ckpt_dir/best.pt`` while
    ``--out`` holds a model from before this run started (``--overwrite``, or ``--resume``
    into an existing file) or a resumed run had staged one there. :func:`publish_staged`
    moves it onto ``--out`` when the run ends, so an interrupted or failed replacement run
    leaves the old model whole (and ``--resume`` finds the staged one). A new run that
    writes ``--out`` directly removes an older run's staged model, which a resumed run of
    this one would otherwise move onto ``--out``."""
    staged = ckpt_dir / STAGED_NAME
    if out_path.exists() or (resume is not None and staged.exists()):
        return staged
    if resume is None:
        staged.unlink(missing_ok=True)
    return out_path


def after_failure(ckpt_dir: Path, started: float, *, remove_empty: bool = True
                  ) -> str | None:
    """Clean up after a run that stopped early (interrupted or failed) at ``started``
    (``time.time()``), and say how to go on: ``--resume`` with the epoch it goes on
    from when this run wrote a checkpoint, None when none. A staged model is kept only
    beside a checkpoint of the same run: one without it (the run stopped before its first
    checkpoint, say on a full disk) would be moved onto ``--out`` by a resumed older run.
    An empty checkpoint folder is removed (``remove_empty``: the default folder beside
    ``--out``, which the run created; not a ``--checkpoint-dir`` the user named)."""
    last, staged = ckpt_dir / CHECKPOINT_NAME, ckpt_dir / STAGED_NAME
    ours = last.exists() and last.stat().st_mtime >= started  # not an older run's
    if not ours and staged.exists() and staged.stat().st_mtime >= started:
        staged.unlink(missing_ok=True)  # every DDP rank may get here
    if remove_empty:
        with contextlib.suppress(OSError):  # not empty, already gone, or another rank's
            ckpt_dir.rmdir()
    if not ours:
        return None
    with contextlib.suppress(OSError, ValueError):  # the rows last.pt holds
        epochs = len((ckpt_dir / METRICS_NAME).read_text().splitlines()) - 1
        return f"continue with --resume {last} (it goes on after epoch {epochs})"
    return f"continue with --resume {last}"


def carry_best(progress: Progress, out_path: Path, target: Path, resume: Path) -> None:
    """Resuming into an ``--out`` that does not exist: the checkpoint holds the last
    weights, not the best. With a staged model in this run's checkpoint folder (the run's
    best so far) the new ``--out`` gets it or a better epoch; otherwise it gets the best of
    the resumed epochs, so the summary never names a file not written, and the log says
    where the earlier best is (the first run's model file, or the model staged beside the
    resumed checkpoint)."""
    if progress.best_iou is None or out_path.exists():
        return
    if target != out_path:
        log.info("--out %s is new: it gets the run's best model (epoch %s, waiting in %s) or "
                 "a better resumed epoch", out_path, progress.best_epoch, target)
        return
    staged = (resume if resume.is_dir() else resume.parent) / STAGED_NAME
    log.info("--out %s is new: it gets the best of the resumed epochs (the best before "
             "them, epoch %s, is in %s)", out_path, progress.best_epoch,
             staged if staged.exists() else "the first run's model file")
    progress.best_iou = progress.best_epoch = None


def publish_staged(staged: Path, out_path: Path) -> None:
    """Copy the staged best model onto ``out_path`` (temp name, then rename: the folders
    may be on different file systems) and remove it; nothing when it was not written."""
    if not staged.exists():
        return
    with atomic_path(out_path) as tmp:
        shutil.copyfile(staged, tmp)
    staged.unlink()


def write_run_config(ckpt_dir: Path, resolved: dict[str, Any]) -> None:
    """Write ``train_config.json`` (``resolved``) beside this run's first checkpoint, not
    at its start: an older run's checkpoint, metrics, staged model and config all stay
    until this run's first epoch replaces them (``--overwrite``), so a replacement that
    fails before it leaves that run resumable and described by its own config."""
    write_json_atomic(ckpt_dir / CONFIG_NAME, {**resolved, "geotiler_version": __version__})


def row_scores(row: dict[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
    """The val scores and train losses of one ``metrics.csv`` row (``val_iou`` -> ``iou``)."""
    val = {k.removeprefix("val_"): v for k, v in row.items() if k.startswith("val_")}
    loss = {k: v for k, v in row.items() if k.startswith("loss")}  # loss, loss_g, loss_d...
    return val, loss


def write_metrics_csv(path: Path, history: list[dict[str, Any]]) -> None:
    """``history`` (one dict per epoch) as CSV, columns in order of first appearance."""
    fields: list[str] = []
    for row in history:
        fields += [k for k in row if k not in fields]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    write_text_atomic(path, buf.getvalue())
