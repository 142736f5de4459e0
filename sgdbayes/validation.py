"""What every config model shares: strict frozen pydantic models, and their errors as one line.

The config (:mod:`sgdbayes.config`), the data section (:class:`sgdbayes.case.DataConfig`) and the
estimators' options (:class:`sgdbayes.estimators.Options`) are pydantic models with :data:`STRICT`;
:func:`config_error` turns pydantic's ``ValidationError`` into the ``ValueError`` / ``TypeError``
the command line prints, naming the key (``estimators.sgd.lr``), what was expected and what came.
"""

from __future__ import annotations

import inspect
import re
from typing import Callable, Sequence

from pydantic import ConfigDict, ValidationError

from sampler._checks import did_you_mean

#: Every config model: unknown keys refused, no silent conversions (an int may be a float, nothing
#: else converts), finite floats. Models add ``frozen=True`` (dataclasses: in their decorator).
STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
#: The same for the sections that are pydantic dataclasses (``[data]``, ...), which take tables only
#: when not strict: their numbers say ``Field(..., strict=True)`` instead.
SECTION = ConfigDict(extra="forbid", allow_inf_nan=False)

# pydantic error types that mean "wrong type" (TypeError); every other error is a ValueError
_TYPE_ERRORS = {"int_type", "int_parsing", "int_from_float", "float_type", "float_parsing", "string_type",
                "bool_type", "bool_parsing", "dict_type", "model_type", "model_attributes_type", "dataclass_type",
                "list_type", "tuple_type", "is_instance_of", "spec_type_error"}
_TYPE_NAMES = {"int": "int", "float": "float", "string": "str", "bool": "bool (true or false)", "dict": "a table",
               "model": "a table", "dataclass": "a table", "list": "a list", "tuple": "a list"}
_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<=",
           "multiple_of": "a multiple of"}


def config_error(exc: ValidationError, *, prefix: tuple = (), fields: Callable[[tuple], Sequence[str]] = lambda loc: (),
                 tags: Callable[[tuple], tuple] = lambda loc: loc) -> ValueError | TypeError:
    """The first error of a pydantic ``ValidationError`` as one line naming the key, what was expected and
    what came: a ``TypeError`` for a wrong type, else a ``ValueError``.

    Parameters
    ----------
    exc : pydantic.ValidationError
    prefix : tuple of str
        Prepended to each error's location (``("estimators", "sgd")`` for an options table).
    fields : callable
        ``fields(loc)``: the valid keys of the table at ``loc`` (for "unknown key" and "did you mean").
    tags : callable
        ``tags(loc)``: ``loc`` without discriminated-union tags.
    """
    err = exc.errors(include_url=False)[0]
    loc = tags(tuple(prefix) + tuple(err["loc"]))
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    key = ".".join(map(str, loc))
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        valid = sorted(fields(loc[:-1]))
        text = (f"unknown config section [{key}]; valid sections: {valid}" if len(loc) == 1 else
                f"unknown key {key}; valid keys of [{'.'.join(map(str, loc[:-1]))}]: {valid}")
        return ValueError(text + did_you_mean(str(loc[-1]), valid))
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        name, tags = ctx["discriminator"].strip("'()"), re.findall(r"'([^']*)'", ctx.get("expected_tags", ""))
        if kind == "union_tag_not_found":
            return ValueError(f"[{key}] needs {name} = \"...\", a registered {name}")
        return ValueError(f"unknown {key}.{name} {ctx['tag']!r}; valid: {tags}{did_you_mean(ctx['tag'], tags)}")
    if kind in _BOUNDS:
        return ValueError(f"{key} must be {_BOUNDS[kind]} {next(iter(ctx.values()))}, got {key}={value!r}")
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", ctx.get("expected", ""))
        return ValueError(f"{key} must be one of {choices}, got {key}={value!r}{did_you_mean(str(value), choices)}")
    if kind in ("value_error", "assertion_error", "spec_type_error"):
        text = str(ctx.get("error", err["msg"]))
        first = text.split(" ", 1)[0]
        if loc and first in fields(loc):
            text = f"{key}.{text}"
        elif loc and not text.startswith(f"{loc[0]}."):
            text = f"{key}: {text}"
        return (TypeError if kind in _TYPE_ERRORS else ValueError)(text)
    if kind in _TYPE_ERRORS:
        what = _TYPE_NAMES.get(kind.rsplit("_", 1)[0], kind)
        what = f"of type {what}" if what in ("int", "float", "str") else what
        return TypeError(f"{key} must be {what}, got {value!r} ({type(value).__name__})")
    return ValueError(f"{key}: {err['msg']}, got {value!r}")


def attribute_docs(doc: str | None) -> dict[str, str]:
    """``{name: its description as one line}`` from a numpydoc ``Attributes`` section."""
    lines = inspect.cleandoc(doc or "").splitlines()
    out: dict[str, str] = {}
    names: list[str] = []
    for line in lines[lines.index("Attributes") + 2:] if "Attributes" in lines else []:
        if line.startswith("---"):  # the next section: its title was no attribute
            for n in names:
                out.pop(n, None)
            break
        if line and not line[0].isspace():
            names = [n.strip() for n in line.split(" : ")[0].split(",")]
            out.update(dict.fromkeys(names, ""))
        elif line.strip():
            for n in names:
                out[n] = f"{out[n]} {line.strip()}".strip()
    return out
