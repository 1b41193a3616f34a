"""Files of Python objects that run no code when they are read back.

Checkpoints and a ServerApp's outcome hold tensors, numpy arrays, plain values and a few of this
project's own dataclasses. They are written with ``torch.save`` and read with
``torch.load(weights_only=True)``: torch's restricted unpickler, which builds nothing but
tensors, plain containers and the classes of an explicit allow-list (:data:`PLAIN_CLASSES` plus
what the caller names). A planted pickle is refused before any of it runs.

An exception in such a file keeps its class when the class is one of this project's errors
(:data:`PROJECT_ERRORS`); any other becomes the nearest project error it derives from, or a
:class:`~credit_data.errors.ReportedError` carrying its type's name and message.

>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / "found.pt"
>>> _ = save_objects(path, {"error": KeyError("lender"), "rows": np.arange(3)})
>>> found = load_objects(path, "outcome")
>>> found["error"], found["error"].original, found["rows"].tolist()
(ReportedError("KeyError: 'lender'"), 'KeyError', [0, 1, 2])
"""

from __future__ import annotations

import io
import pickle
import threading
import types
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy._core.multiarray import _reconstruct, scalar  # type: ignore[attr-defined]

from credit_data import errors
from credit_data.errors import ConfigError, CreditFLError, ReportedError
from credit_data.federated_scaling import Schema
from federation.query_ledger import QueryLimit
from federation.storage import atomic_path
from models.bundle import BundleError
from models.metrics import ScoreSummary
from privacy.ledger import PartySpend, PrivacyLedger

__all__ = ["PLAIN_CLASSES", "PROJECT_ERRORS", "load_objects", "save_objects"]

PROJECT_ERRORS: tuple[type[BaseException], ...] = (
    *(value for value in vars(errors).values()
      if isinstance(value, type) and issubclass(value, BaseException)
      and value.__module__ == errors.__name__),
    BundleError, QueryLimit)
"""The exceptions that keep their class in a file (all of ``credit_data.errors``)."""

_NUMPY: tuple[Any, ...] = (
    np.ndarray, np.dtype, _reconstruct, scalar,
    *(getattr(np.dtypes, name) for name in np.dtypes.__all__))
"""What a numpy array or scalar is rebuilt from: an empty array, a dtype, raw bytes."""

PLAIN_CLASSES: tuple[Any, ...] = (*_NUMPY, *PROJECT_ERRORS, Schema, ScoreSummary, PartySpend,
                                  PrivacyLedger)
"""Allowed in every file: numpy values, the project's errors and its plain data classes."""

_LOCK = threading.Lock()  # torch keeps its allow-list in one global set


def _project_error(exc: BaseException) -> BaseException:
    """Return ``exc`` as an instance of a project error class, with its message only."""
    message = str(exc)
    if isinstance(exc, ReportedError):
        kept = ReportedError(message)
        kept.original = exc.original
        return kept
    for cls in type(exc).__mro__:  # its own class or the nearest project error above it
        if cls in PROJECT_ERRORS:
            return cls(message or type(exc).__name__)
    reported = ReportedError(f"{type(exc).__name__}: {message}" if message
                             else type(exc).__name__)
    reported.original = type(exc).__name__
    return reported


class _Pickler(pickle.Pickler):
    """``torch.save``'s pickler, writing every exception as a project error."""

    def reducer_override(self, obj: Any) -> Any:
        """Reduce an exception to its project class and message; anything else as usual."""
        if not isinstance(obj, BaseException):
            return NotImplemented
        plain = _project_error(obj)
        state = {"original": plain.original} if isinstance(plain, ReportedError) else None
        return type(plain), tuple(str(a) for a in plain.args), state


_PICKLE = types.ModuleType("credit_fl_plain_pickle")
_PICKLE.Pickler = _Pickler  # type: ignore[attr-defined]


def save_objects(path: Path, obj: Any, allowed: Iterable[type] = ()) -> Path:
    """Write ``obj`` to ``path`` atomically, in a file :func:`load_objects` reads.

    ``allowed`` names the caller's own plain classes in ``obj`` (beyond :data:`PLAIN_CLASSES`).
    Raises :class:`TypeError` naming any other class, before anything is written: a file that
    could not be read back without running code is never written.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer, pickle_module=_PICKLE)
    buffer.seek(0)
    with _LOCK, torch.serialization.safe_globals([*PLAIN_CLASSES, *allowed]):
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(buffer)
    if unsafe:
        raise TypeError(f"{path}: cannot keep {sorted(unsafe)} in a file that runs no code when "
                        "read; only tensors, plain values and the allowed classes")
    with atomic_path(path, mode=0o600) as tmp:
        tmp.write_bytes(buffer.getvalue())
    return path


def load_objects(path: Path, what: str, allowed: Iterable[type] = (),
                 error: type[CreditFLError] = ConfigError) -> Any:
    """Read what :func:`save_objects` wrote to ``path``; nothing in the file runs.

    ``what`` names the file in errors (``resume=runs/x: checkpoint``). A file of another format
    (a plain pickle, a torch file holding other classes) is refused with ``error``.
    """
    if not zipfile.is_zipfile(path):
        raise error(f"{what}: {path} is not a file this project wrote (not torch's zip "
                    "format); refused without reading it")
    try:
        with _LOCK, torch.serialization.safe_globals([*PLAIN_CLASSES, *allowed]):
            return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # the restricted unpickler's refusal, a truncated file...
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise error(f"{what}: {path} holds something other than tensors, plain values and "
                    f"this project's own classes, and was refused without running it "
                    f"({reason})") from exc
