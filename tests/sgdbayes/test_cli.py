import pytest

from sgdbayes.cli import main


def test_data_summary(capsys):
    assert main(["data", "mnist", "--n-train", "100", "--n-test", "10"]) == 0
    out = capsys.readouterr().out
    assert "m = 100" in out and "k = 10" in out


@pytest.mark.parametrize("argv, match", [
    (["data", "mnist", "--n-train", "-5"], "n_train must be >= 1, got n_train=-5"),
    (["data", "mnsit"], "did you mean 'mnist'"),
    (["run", "--set", "estimators.sgd.n_rns=3"], "unknown key estimators.sgd.n_rns"),
    (["run", "no-such-config.toml"], "does not exist"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, argv, match):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert pytest.importorskip("re").search(match, err)


def test_help_exits_cleanly():
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0


def test_estimators_are_listed(capsys):
    assert main(["estimators"]) == 0
    out = capsys.readouterr().out
    for name in ["sgd", "prior", "ess", "nuts", "ep", "ep-conditional", "tilting"]:
        assert f"\n{name}  (" in "\n" + out
