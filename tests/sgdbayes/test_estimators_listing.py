"""`sgdbayes estimators` says what each method is and what each option does (issue 25)."""

from sgdbayes.cli import main
from sgdbayes.estimators import estimator_names, get_estimator


def test_every_method_and_option_has_a_description(capsys):
    assert main(["estimators"]) == 0
    out = capsys.readouterr().out
    for name in estimator_names():
        est = get_estimator(name)
        if not est.__module__.startswith("sgdbayes."):
            continue  # a toy estimator another test registered
        header = next(line for line in out.splitlines() if line.startswith(f"{name}  ("))
        assert "module docstring" not in header and len(header.split("): ", 1)[1]) > 10, header
        docs = est.Options.docs()
        missing = [k for k in est.Options.model_fields if not docs.get(k)]
        assert not missing, f"{name}: options without a description: {missing}"
