"""What every config model shares: strict pydantic settings and numpydoc field docs.

The config (:mod:`sgdbayes.config`, which also turns pydantic's errors into one line), the data
section (:class:`sgdbayes.case.DataConfig`) and the estimators' options
(:class:`sgdbayes.estimators.Options`) use them.
"""

from __future__ import annotations

import inspect

from pydantic import ConfigDict

#: Every config model: unknown keys refused, no silent conversions (an int may be a float, nothing
#: else converts), finite floats. Models add ``frozen=True`` (dataclasses: in their decorator).
STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
#: The same for the sections that are pydantic dataclasses (``[data]``, ...), which take tables only
#: when not strict: their numbers say ``Field(..., strict=True)`` instead.
SECTION = ConfigDict(extra="forbid", allow_inf_nan=False)


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
