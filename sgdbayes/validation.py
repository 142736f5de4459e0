"""What every config model shares: strict pydantic models, and their errors as one line.

The config (:mod:`sgdbayes.config`), the data section (:class:`sgdbayes.case.DataConfig`) and the
estimators' options (:class:`sgdbayes.estimators.Options`) are pydantic models with :data:`STRICT`
(or :data:`SECTION`); :func:`config_error` turns pydantic's ``ValidationError`` into the
``ValueError`` / ``TypeError`` the command line prints, naming the key (``estimators.sgd.lr``), what
was expected and what came.
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

# what a pydantic error type expected, in the config's words; the first nine are wrong types (TypeError)
_EXPECTED = {"int_type": "of type int", "float_type": "of type float", "string_type": "of type str",
             "bool_type": "true or false", "dict_type": "a table", "model_type": "a table", "dataclass_type": "a table",
             "list_type": "a list", "tuple_type": "a list", "greater_than": "> {gt}", "greater_than_equal": ">= {ge}",
             "less_than": "< {lt}", "less_than_equal": "<= {le}", "multiple_of": "a multiple of {multiple_of}",
             "finite_number": "finite", "missing": "given"}
_TYPE_ERRORS = set(list(_EXPECTED)[:9]) | {"spec_type_error"}


def config_error(exc: ValidationError, *, prefix: tuple = (), fields: Callable[[tuple], Sequence[str]] = lambda loc: (),
                 tags: Callable[[tuple], tuple] = lambda loc: loc) -> ValueError | TypeError:
    """The first error of a pydantic ``ValidationError`` as one line naming the key, what was expected and
    what came: a ``TypeError`` for a wrong type, else a ``ValueError``.

    Parameters
    ----------
    exc : pydantic.ValidationError
    prefix : tuple of str
        Prepended to the error's location (``("estimators", "sgd")`` for an options table).
    fields : callable
        ``fields(loc)``: the valid keys of the table at ``loc`` (for "unknown key" and "did you mean").
    tags : callable
        ``tags(loc)``: ``loc`` without discriminated-union tags.
    """
    err = exc.errors(include_url=False)[0]
    loc = tags(tuple(prefix) + tuple(err["loc"]))
    kind, value, ctx, key = err["type"], err.get("input"), err.get("ctx") or {}, ".".join(map(str, loc))
    error = TypeError if kind in _TYPE_ERRORS else ValueError
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        valid = sorted(fields(loc[:-1]))
        where = (f"config section [{key}]; valid sections" if len(loc) == 1 else
                 f"key {key}; valid keys of [{'.'.join(map(str, loc[:-1]))}]")
        return error(f"unknown {where}: {valid}{did_you_mean(str(loc[-1]), valid)}")
    if kind.startswith("union_tag"):  # a discriminated union: the method or kind is missing or unknown
        name, valid = ctx["discriminator"].strip("'()"), re.findall(r"'([^']*)'", ctx.get("expected_tags", ""))
        if "tag" not in ctx:
            return error(f"[{key}] needs {name} = \"...\", a registered {name}")
        return error(f"unknown {key}.{name} {ctx['tag']!r}; valid: {valid}{did_you_mean(ctx['tag'], valid)}")
    if kind in ("value_error", "assertion_error", "spec_type_error"):  # a model's own check: it names the key
        text = str(ctx.get("error", err["msg"]))
        if loc and text.split(" ", 1)[0] in fields(loc):
            return error(f"{key}.{text}")
        return error(text if not loc or text.startswith(str(loc[0])) else f"{key}: {text}")
    expected = _EXPECTED[kind].format(**ctx) if kind in _EXPECTED else err["msg"].replace("Input should be ", "")
    choices = re.findall(r"'([^']*)'", ctx.get("expected", "")) if kind == "literal_error" else []
    return error(f"{key} must be {expected}, got {value!r} ({type(value).__name__}){did_you_mean(str(value), choices)}")


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
