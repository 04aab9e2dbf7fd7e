"""Errors raised by the library. The CLI turns each into a one-line message and exit code 1.

Library code raises these (never ``click`` exceptions, never ``assert`` on user input) so
that a message says what is wrong, shows the values involved and, where there is one,
the fix. Failures of GDAL, PROJ, the codecs or the OS are translated where they happen
(:meth:`InputError.reading`, :meth:`OutputError.writing`), so the message names the file;
the CLI's last-resort net (:mod:`geotiler.cli.main`) catches whatever slips through.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path


def reason(err: BaseException) -> str:
    """The first line of an exception's message (the OS's words for an OSError), or the
    exception's type name when it has no message. Where the message only points at an
    earlier exception (rasterio's "Read failed. See previous exception for details."),
    that exception's reason is given instead."""
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    text = str(err).strip()
    earlier = err.__cause__ or err.__context__
    if earlier is not None and "previous exception" in text:
        return reason(earlier)
    return text.splitlines()[0] if text else type(err).__name__


class GeotilerError(Exception):
    """Base class of every error a user can act on."""


class InputError(GeotilerError):
    """An input file is missing, unreadable, or not what the command needs."""

    @classmethod
    def reading(cls, path: Path | str, err: BaseException, what: str = "") -> InputError:
        """``cannot read {what} {path}: {reason}`` for a failure while reading ``path``."""
        return cls(f"cannot read {what + ' ' if what else ''}{path}: {reason(err)}")


class ConfigError(GeotilerError):
    """A setting is out of range or inconsistent with the data."""


class OutputError(GeotilerError):
    """An output location cannot be used (exists, is not ours, is not writable)."""

    @classmethod
    def writing(cls, path: Path | str, err: BaseException) -> OutputError:
        """``cannot write {path}: {reason}`` for a failure while writing ``path``; the OS's
        reasons that need a word of advice (a full disk, a file too large for a limit, a
        read-only location, a file where a folder is needed) get one."""
        if not (isinstance(err, OSError) and err.errno):
            # GDAL ("TIFFAppendToStrip: Write error") and torch ("unexpected pos") report a
            # short write in their own words, without the OS's errno
            text = reason(err)  # follows rasterio's "see previous exception"
            if "File too large" in text:
                err = OSError(errno.EFBIG, os.strerror(errno.EFBIG))
            elif "No space left" in text or _disk_full(Path(path)):
                err = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            elif any(words in text for words in _SHORT_WRITE):
                # the partial files may be gone by now, so the disk need not look full
                return cls(f"cannot write {path}: the write came up short: the disk is "
                           "full or a file size limit (ulimit -f) is reached")
        hint = _HINTS.get(err.errno, "") if isinstance(err, OSError) and err.errno else ""
        return cls(f"cannot write {path}: {reason(err)}{hint}")


#: How GDAL/libtiff and torch word a write that stopped short (no errno with them).
_SHORT_WRITE = ("Write error", "TIFFAppendToStrip", "_tiffWriteProc", "unexpected pos",
                "PytorchStreamWriter failed")


def _disk_full(path: Path) -> bool:
    """Whether the file system holding ``path`` (or its nearest existing parent) has less
    than 1 MiB free."""
    import shutil

    for folder in (path, *path.parents):
        if folder.exists():
            try:
                return shutil.disk_usage(folder).free < 2**20
            except OSError:
                return False
    return False


_HINTS = {
    errno.ENOSPC: " (free some space or choose another --out)",
    errno.EFBIG: " (the file size limit, ulimit -f, is reached)",
    errno.EROFS: " (choose a writable --out)",
    errno.EACCES: " (choose a writable --out)",
    errno.EPERM: " (choose a writable --out)",
    errno.ENOTDIR: " (a part of the path is a file, not a folder)",
    errno.EEXIST: " (a file is in the way where a folder is needed)",
}


class DatasetError(GeotilerError):
    """A tile dataset is missing, incomplete, corrupt or of an unsupported version."""


class ModelFileError(GeotilerError):
    """A model file is corrupt, not a geotiler model, or incompatible with the input."""


class TrainingError(GeotilerError):
    """Training cannot go on (the loss is no longer a finite number)."""
