"""Files that are never half-written, and torch files read back with errors that say what is wrong.

``atomic_write``: a reader never sees a half-written file, an interrupted writer leaves the old one.
``load_torch``: ``torch.load(weights_only=True)`` (tensors and plain containers only, nothing else is ever
unpickled) with one-line errors for empty, truncated and foreign files.
"""
from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

import torch

from .errors import InputError, MissingInputError


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, fsync it, then rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_torch(path: str | os.PathLike, what: str = "checkpoint", map_location="cpu"):
    """``torch.load(path, weights_only=True)``; a missing, empty, truncated or foreign file is an
    :class:`~ecg_jepa.errors.InputError` whose one line names the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"no {what} at {path}")
    size = path.stat().st_size
    unreadable = f"{path} is not a readable {what}"
    if size == 0:
        raise InputError(f"{unreadable}: it is empty (0 bytes), never written or cut off")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        message = str(e)
        if "truncated" in message:
            raise InputError(f"{unreadable}: it is truncated ({size:,} bytes), cut off while being written") from None
        if "Unsupported global" in message or "GLOBAL" in message:
            raise InputError(f"{unreadable}: it holds objects other than tensors and plain containers, which are "
                             "never unpickled (only ecg-jepa's and the original ECG-JEPA's checkpoints load)") from None
        raise InputError(f"{unreadable}: not a torch file ({size:,} bytes)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        message = (str(e).splitlines()[0].split(". This is")[0][:160]) if str(e) else type(e).__name__
        if "zip archive" in message or "central directory" in message or isinstance(e, EOFError):
            raise InputError(f"{unreadable}: it is truncated or damaged ({size:,} bytes; {message}), cut off while "
                             "being written or copied incompletely") from None
        raise InputError(f"{unreadable}: {message} ({size:,} bytes)") from None
