"""Input checks for every layer's public boundaries (public: nngp, analysis and sgdbayes use them too).

Each raises ``TypeError`` or ``ValueError`` with a message that names the parameter, what was
expected and what came, so that the command line can print it as one line.
"""

from __future__ import annotations

import difflib
import math
import numbers
from typing import Iterable

import numpy as np
import torch


def _in_range(name: str, value, minimum, maximum, strict_minimum: bool = False):
    if minimum is not None and (value <= minimum if strict_minimum else value < minimum):
        raise ValueError(f"{name} must be {'>' if strict_minimum else '>='} {minimum}, got {name}={value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {name}={value}")
    return value


def check_int(name: str, value, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """Return ``value`` as ``int`` if it is an integer within ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    return _in_range(name, int(value), minimum, maximum)


def check_float(name: str, value, *, minimum: float | None = None, maximum: float | None = None,
                strict_minimum: bool = False) -> float:
    """Return ``value`` as ``float`` if it is a finite real number within ``[minimum, maximum]``
    (``(minimum, maximum]`` with ``strict_minimum``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value := float(value)):
        raise ValueError(f"{name} must be finite, got {name}={value}")
    return _in_range(name, value, minimum, maximum, strict_minimum)


def check_plain_name(what: str, value) -> str:
    """Return ``value`` if it is a plain file name: not empty, no ``/``, no leading ``.``."""
    if not isinstance(value, str) or not value or "/" in value or value.startswith("."):
        raise ValueError(f"{what} must be a plain name, got {value!r}")
    return value


def check_choice(name: str, value, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``; otherwise name the nearest valid choice."""
    choices = list(choices)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {choices}, got {value!r} ({type(value).__name__})")
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {name}={value!r}{did_you_mean(value, choices)}")
    return value


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``choices``, or ``""``."""
    close = difflib.get_close_matches(str(value), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_real_array(name: str, value, *, ndim: int | None = None, allow_empty: bool = False):
    """``value`` (torch tensor, numpy array or nested list) as a real, finite numpy array.

    Rejects strings and objects, complex numbers, half precision (too coarse for the
    probabilities computed here: pass float32 or float64), NaN and inf, a wrong number of
    dimensions, and (unless ``allow_empty``) zero-size arrays, naming ``name`` each time.
    """
    if isinstance(value, (str, bytes, dict, set)) or value is None:
        raise TypeError(f"{name} must be an array of real numbers, got {type(value).__name__}")
    dtype = value.dtype if isinstance(value, torch.Tensor) else np.asarray(value).dtype
    if dtype in (torch.float16, torch.bfloat16, np.float16):
        raise TypeError(f"{name} must be float32 or float64, got {dtype} (too coarse for these computations)")
    arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if arr.dtype.kind == "c":
        raise TypeError(f"{name} must be real, got complex values ({arr.dtype})")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {arr.shape}")
    if not allow_empty and arr.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"{name} holds NaN or inf values")
    return arr


#: Device names every public function taking a ``device`` accepts (also ``"cuda:N"`` and a ``torch.device``).
DEVICES = ("cpu", "cuda", "auto")


def check_device(device, *, name: str = "device", allow_none: bool = False) -> torch.device | None:
    """The one device check of every public function that takes a device: ``"cpu"``, ``"cuda"``
    (``"cuda:N"``), ``"auto"`` (CUDA where available, else the CPU) or a ``torch.device`` of those
    types, as a ``torch.device``; ``None`` passes through when ``allow_none``. Anything else, or
    CUDA asked for where it is not available, is one line naming ``name``."""
    if device is None and allow_none:
        return None
    if isinstance(device, torch.device):
        dev = device
    elif isinstance(device, str):
        if device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if device.split(":")[0] not in ("cpu", "cuda"):
            raise ValueError(f"{name} must be one of {list(DEVICES)} (or 'cuda:N'), got {name}={device!r}")
        try:
            dev = torch.device(device)
        except RuntimeError:
            raise ValueError(f"{name} must be one of {list(DEVICES)} (or 'cuda:N'), got {name}={device!r}") from None
    else:
        none = " or None" if allow_none else ""
        raise TypeError(f"{name} must be a string {list(DEVICES)}, a torch.device{none}, got {type(device).__name__}")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"{name} must be one of {list(DEVICES)} (or 'cuda:N'), got {name}={str(device)!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name}={str(device)!r} was asked for but CUDA is not available here; use 'cpu' or 'auto'")
    return dev
