"""The output directory of ``geotiler tile``: made safe to write, resumed, or discarded.

A rerun reuses an earlier run's finished shards only when it has the same settings, the same
input paths and sizes (``config.json["fingerprint"]``) and inputs of the same content: the
SHA-256 of every input is added to ``config.json`` once hashed (:func:`record_digests`), and
compared before anything is reused. Size and mtime alone would let a file edited in place
(same size, mtime kept) pass as unchanged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geotiler import __version__
from geotiler.atomic import write_json_atomic
from geotiler.errors import OutputError
from geotiler.io import source_digest, source_label
from geotiler.tiles.schema import CONFIG_FILE, DATASET_FILE, INDEX_FILE
from geotiler.tiles.shards import PARTIAL_SUFFIX, SHARD_DIR

if TYPE_CHECKING:
    from geotiler.tiles.plan import TilingPlan

log = logging.getLogger(__name__)

# SHA-256 of each input (None for a remote raster, identified by URL, size and ETag).
Digests = dict[Path | str, str | None]


def source_digests(plan: TilingPlan) -> Digests:
    """SHA-256 of every input file (rasters and footprints); None for a remote raster
    (never downloaded to be hashed: its URL, size and ETag identify it, see plan._stat)."""
    return {path: source_digest(path) for path in plan.input_paths}


def _digest_json(digests: Digests) -> dict[str, str | None]:
    return {source_label(path) if isinstance(path, str) else str(path.resolve()): digest
            for path, digest in digests.items()}


def record_digests(out_dir: Path | str, plan: TilingPlan, digests: Digests) -> None:
    """Add the inputs' SHA-256 to ``config.json``: from then on a rerun can reuse this run's
    shards (a run interrupted before its inputs were hashed is redone whole)."""
    write_json_atomic(Path(out_dir) / CONFIG_FILE, {
        "geotiler_version": __version__,
        "fingerprint": plan.fingerprint,
        "sha256": _digest_json(digests),
    })


#: Where a run that replaces a dataset (``--overwrite``) writes the new one, inside
#: ``--out``; the old dataset stays in place until the new one is finished
#: (:func:`commit_replacement`), and is what remains if the run fails.
STAGING_DIR = ".geotiler-new"
_RETIRED_DIR = ".geotiler-old"
_DATASET_PARTS = (SHARD_DIR, INDEX_FILE, CONFIG_FILE)  # moved before dataset.json, the marker


@dataclass(frozen=True)
class OutputPlan:
    """Where a tiling run writes, decided by :func:`prepare_output`.

    ``resume``: finished shards of an earlier identical run may be reused. ``write_dir``:
    ``--out`` itself, or :data:`STAGING_DIR` inside it when ``replacing`` an earlier
    dataset (moved into place by :func:`commit_replacement` once finished). ``fresh``:
    ``--out`` held no dataset before this run (a run that fails before finishing any shard
    then leaves nothing behind, see :func:`discard_unfinished`).
    """

    out: Path
    write_dir: Path
    resume: bool = False
    replacing: bool = False
    fresh: bool = True


def fingerprint_changes(old: Any, new: dict[str, Any]) -> list[str]:
    """What differs between an earlier run's fingerprint and this one's, in the terms of
    the options that set it: ``--size 128 -> 64``, ``--footprints-where 'a' -> 'b'``, ``the
    rasters``; empty when ``old`` is missing or unreadable."""
    if not isinstance(old, dict):
        return []
    found = []
    old_config, new_config = old.get("config") or {}, new.get("config") or {}
    for key in sorted(set(old_config) | set(new_config)):
        if old_config.get(key) != new_config.get(key):
            found.append(f"--{key.replace('_', '-')} {_shown(old_config.get(key))} -> "
                         f"{_shown(new_config.get(key))}")
    if old.get("sources") != new.get("sources"):
        found.append("the rasters (paths, sizes or ETags)")
    old_fp, new_fp = old.get("footprints") or {}, new.get("footprints") or {}
    if (old_fp.get("path"), old_fp.get("size")) != (new_fp.get("path"), new_fp.get("size")):
        found.append("the footprints file")
    for key in ("layer", "where"):
        if old_fp.get(key) != new_fp.get(key):
            found.append(f"--footprints-{key} {_shown(old_fp.get(key))} -> "
                         f"{_shown(new_fp.get(key))}")
    return found


def _shown(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, list):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return repr(value) if isinstance(value, str) else str(value)


def prepare_output(out_dir: Path | str, plan: TilingPlan, *, overwrite: bool,
                   digests: Callable[[], Digests] | None = None) -> OutputPlan:
    """Make ``out_dir`` ready and say where the run writes (:class:`OutputPlan`).

    An existing directory is used only if it is empty, or a geotiler dataset: made with the
    same settings and inputs of the same content (resume: ``digests()`` gives the inputs'
    SHA-256, computed only then), or any geotiler dataset with ``overwrite``, which is
    replaced only once the new one is finished (the run writes under :data:`STAGING_DIR`).
    An earlier run with the same settings whose inputs were never hashed is redone whole.
    Stale partial files of an interrupted run are removed.

    Raises:
        OutputError: ``out_dir`` is a file, lies under one, cannot be created or written,
            or holds something else than this dataset (without ``overwrite``).
    """
    out = Path(out_dir)
    fingerprint = plan.fingerprint
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} exists and is not a directory")
    resume = replacing = False
    fresh = True
    hashes: Digests | None = None
    if out.is_dir() and any(out.iterdir()):
        config_path = out / CONFIG_FILE
        ours = config_path.is_file() or (out / DATASET_FILE).is_file()
        if not ours:
            raise OutputError(
                f"--out {out} exists, is not empty and is not a geotiler tile dataset; "
                "choose a new or empty directory"
            )
        fresh = False
        previous = _read_json(config_path) or {}
        changed = "other settings or inputs"
        differences = fingerprint_changes(previous.get("fingerprint"), fingerprint)
        if differences:
            changed = f"other settings or inputs ({'; '.join(differences)})"
        if previous.get("fingerprint") == fingerprint and not overwrite:
            hashes = (digests or (lambda: source_digests(plan)))()
            recorded = previous.get("sha256")
            if recorded == _digest_json(hashes):
                resume = True
            elif recorded is None:
                log.info("%s: the earlier run stopped before its inputs were hashed; "
                         "tiling again", out)
                overwrite = True
            else:
                now = _digest_json(hashes)
                names = [Path(key).name for key, d in now.items() if recorded.get(key) != d]
                changed = f"inputs of other content ({', '.join(names)} changed)"
        if overwrite and not resume:
            log.info("the dataset in %s will be replaced once the new one is finished", out)
            replacing = True
        elif not resume:
            raise OutputError(
                f"--out {out} holds a tile dataset made with {changed}; "
                "add --overwrite to replace it, or choose another directory"
            )
    write_dir = out / STAGING_DIR if replacing else out
    try:
        out.mkdir(parents=True, exist_ok=True)
        for leftover in (out / STAGING_DIR, out / _RETIRED_DIR):  # of a run that was killed
            shutil.rmtree(leftover, ignore_errors=True)
        write_dir.mkdir(exist_ok=True)
        for stale in out.rglob(f"*{PARTIAL_SUFFIX}*"):
            stale.unlink()
    except OSError as err:
        raise OutputError.writing(out, err) from None
    if not os.access(out, os.W_OK):
        raise OutputError(f"--out {out} is not writable")
    if hashes is not None:
        record_digests(write_dir, plan, hashes)
    else:
        write_json_atomic(write_dir / CONFIG_FILE, {
            "geotiler_version": __version__,
            "fingerprint": fingerprint,
        })
    return OutputPlan(out, write_dir, resume=resume, replacing=replacing, fresh=fresh)


def commit_replacement(target: OutputPlan) -> None:
    """Put a finished replacement dataset in place of the old one (``--overwrite``).

    The old ``dataset.json`` goes first (from then on the folder reads as an unfinished
    run, never as a mix passing for a finished one), the old shards, index and config are
    moved aside, the new ones moved in, the new ``dataset.json`` last; then the old parts
    are deleted. Each step is a rename within the folder.

    Raises:
        OutputError: a rename fails (the OS's reason).
    """
    out, new = target.out, target.write_dir
    retired = out / _RETIRED_DIR
    try:
        retired.mkdir(exist_ok=True)
        (out / DATASET_FILE).unlink(missing_ok=True)
        for name in _DATASET_PARTS:
            if (out / name).exists():
                os.replace(out / name, retired / name)
        for name in (*_DATASET_PARTS, DATASET_FILE):
            if (new / name).exists():
                os.replace(new / name, out / name)
    except OSError as err:
        raise OutputError.writing(out, err) from None
    shutil.rmtree(retired, ignore_errors=True)
    shutil.rmtree(new, ignore_errors=True)


def discard_unfinished(target: OutputPlan) -> None:
    """After a failed run: remove a replacement being written (the old dataset stays), or,
    in a folder that held no dataset, whatever the run wrote if it finished no shard (a
    run that finished shards keeps them, for a rerun to reuse)."""
    if target.replacing:
        shutil.rmtree(target.write_dir, ignore_errors=True)
    elif target.fresh and not any((target.write_dir / SHARD_DIR).glob("*.tar")):
        discard_dataset(target.write_dir)


def discard_dataset(out_dir: Path | str) -> None:
    """Remove what a run wrote into ``out_dir`` (shards, config, index), and the folder
    itself if nothing else is left in it."""
    out = Path(out_dir)
    shutil.rmtree(out / SHARD_DIR, ignore_errors=True)
    for name in (DATASET_FILE, INDEX_FILE, CONFIG_FILE):
        (out / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        out.rmdir()


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
