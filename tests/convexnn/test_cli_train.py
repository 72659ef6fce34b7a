"""``certopt train`` on a CSV file."""

import numpy as np

from certopt.cli import main


def _csv(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 2))
    y = np.abs(X[:, 0]) - X[:, 1]
    path = tmp_path / "data.csv"
    np.savetxt(path, np.c_[X, y, y > 0], delimiter=",", header="a,b,y,label", comments="")
    return str(path)


def test_train_regression_prints_certificate(tmp_path, capsys):
    code = main(["train", _csv(tmp_path), "--target", "y", "--n-patterns", "6",
                 "--max-iter", "300", "--lam", "0.01"])
    out = capsys.readouterr().out
    assert code == 0
    assert "30 samples, 3 features" in out and "bound" in out and "gap" in out


def test_train_classification_and_bad_target(tmp_path, capsys):
    path = _csv(tmp_path)
    assert main(["train", path, "--target", "label", "--classify", "--n-patterns", "6",
                 "--max-iter", "300"]) == 0
    assert "training score" in capsys.readouterr().out
    assert main(["train", path, "--target", "nope"]) == 2
    assert "--target" in capsys.readouterr().err
