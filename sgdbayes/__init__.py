"""sgd-bayes application layer: config, estimators, pipeline, fan-out, sweeps, reports, command line."""

import importlib.util as _util
from pathlib import Path as _Path


def _check_not_shadowed(packages=("sampler", "nngp", "analysis")) -> None:
    """Refuse, in one line, a file or folder of the user's (``analysis.py`` next to their script) that
    would be imported instead of one of sgd-bayes' top-level packages: without this the run dies later
    with an ImportError that names neither file."""
    home = _Path(__file__).resolve().parent.parent
    for name in packages:
        spec = _util.find_spec(name)
        origin = _Path(spec.origin).resolve() if spec is not None and spec.origin else None
        if origin is not None and origin != home / name / "__init__.py":
            raise ImportError(f"{origin} shadows sgd-bayes' package {name!r} ({home / name}): it comes first on "
                              f"sys.path; rename your file or folder (or run from another folder)")


_check_not_shadowed()
