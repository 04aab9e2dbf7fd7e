"""Write-then-rename: the one way geotiler writes a file, so no reader (or crash) ever sees
half of one and nothing already in place is lost when a write fails.

Every output (shards and their records, ``dataset.json``, ``index.gpkg``, model files,
checkpoints, GeoTIFFs, ``buildings.gpkg``, metrics, quick-looks) goes through
:func:`atomic_path`, or :func:`write_text_atomic` / :func:`write_json_atomic` built on it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from geotiler.errors import OutputError

PARTIAL_SUFFIX = ".partial"


def partial_path(path: Path | str, *, keep_suffix: bool = False) -> Path:
    """The temporary name :func:`atomic_path` writes ``path`` under.

    ``{name}.partial``; with ``keep_suffix``, ``{stem}.partial{suffix}`` (``index.partial.gpkg``)
    for writers that pick their format by the file's extension (GDAL/OGR drivers).
    """
    path = Path(path)
    if keep_suffix and path.suffix:
        return path.with_name(f"{path.stem}{PARTIAL_SUFFIX}{path.suffix}")
    return path.with_name(path.name + PARTIAL_SUFFIX)


def prepare_output_folder(folder: Path | str) -> list[Path]:
    """Create ``folder`` (and its parents) for outputs and check it can be written, before
    any work: a command should fail on an unusable ``--out`` at once, not after minutes.
    Returns the folders it created, deepest first (a failed run removes them again).

    Raises:
        OutputError: it cannot be created (e.g. it lies under a file) or is not writable.
    """
    folder = Path(folder)
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError.writing(folder, err) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"output directory {folder} is not writable")
    return created


@contextlib.contextmanager
def atomic_path(path: Path | str, *, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write ``path`` to; rename it into place if the block
    succeeds, remove it if the block raises (Ctrl-C included).

    Raises:
        OutputError: the temporary file cannot be renamed into place (one line naming
            ``path`` and the OS's reason, e.g. a full disk or a read-only folder). Errors
            raised inside the block propagate unchanged; the temporary file is removed and
            any earlier file at ``path`` stays intact.
    """
    path = Path(path)
    tmp = partial_path(path, keep_suffix=keep_suffix)
    try:
        tmp.unlink(missing_ok=True)
        yield tmp
        try:
            os.replace(tmp, path)
        except OSError as err:
            raise OutputError.writing(path, err) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path | str, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_path`.

    Raises:
        OutputError: the file cannot be written (disk full, read-only, not a folder...).
    """
    with atomic_path(path) as tmp:
        try:
            tmp.write_text(text, encoding="utf-8")
        except OSError as err:
            raise OutputError.writing(path, err) from None


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (JSON has no NaN/inf)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_json_atomic(path: Path | str, data: Any, *, indent: int | None = 2) -> None:
    """Write ``data`` as strict JSON (sorted keys) through :func:`atomic_path`.

    NaN and infinity are not JSON: they are written as ``null``, so every file geotiler writes
    parses in any JSON reader.

    Raises:
        OutputError: the file cannot be written.
    """
    text = json.dumps(_finite(data), indent=indent, sort_keys=True, allow_nan=False)
    write_text_atomic(path, text + "\n")
