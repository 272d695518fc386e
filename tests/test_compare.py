"""``python -m nemon.compare``: a regenerated results tree against a reference, run times aside."""

import json

import pytest

from nemon import compare


def _tree(root, *, seconds=1.0, accuracy=0.5, commit="abc", extra=None):
    model = root / "models" / "nemon" / "g0.5_s0"
    model.mkdir(parents=True)
    record = {
        "clean_acc": 0.9,
        "evaluation_seconds": seconds,
        "timings": {"pgd": seconds},
        "provenance": {"commit": commit},
        "settings": {"eps": [0.1, 0.2], **(extra or {})},
    }
    (model / "evaluation.json").write_text(json.dumps(record))
    (model / "robustness.csv").write_text(f"attack,eps,accuracy\npgd,0.1,{accuracy}\n")
    (model / "model.pt").write_bytes(str(seconds).encode())  # never compared
    (root / "summary.csv").write_text(f"model,clean_acc,train_seconds\nnemon,0.9,{seconds}\n")
    (root / "figure.png").write_bytes(b"\x89PNG same")
    return root


def test_run_times_provenance_and_model_files_are_left_out(tmp_path, capsys):
    ref = _tree(tmp_path / "logs" / "ref")  # a folder named logs above the trees is no log
    new = _tree(tmp_path / "new", seconds=2.5, commit="def")
    (ref / "models" / "logs").mkdir()
    (ref / "models" / "logs" / "train.txt").write_text("a log, not compared")
    assert compare.main([str(new), str(ref)]) == 0
    assert "4 files compared: 4 reproduced, 0 not" in capsys.readouterr().out


@pytest.mark.parametrize(
    "change, where",
    [
        (dict(accuracy=0.52), "robustness.csv: row 0, column accuracy: 0.52 != 0.5"),
        (dict(extra={"steps": 10}), "evaluation.json: settings.steps: only in the regenerated"),
    ],
)
def test_a_changed_number_or_key_is_named(tmp_path, capsys, change, where):
    ref = _tree(tmp_path / "ref")
    new = _tree(tmp_path / "new", **change)
    assert compare.main([str(new), str(ref)]) == 1
    out = capsys.readouterr().out
    assert where in out and "4 files compared: 3 reproduced, 1 not" in out


def test_ignore_leaves_out_a_key_and_other_files_compare_bytes(tmp_path, capsys):
    ref = _tree(tmp_path / "ref")
    new = _tree(tmp_path / "new", extra={"warm_start": False})
    assert compare.main([str(new), str(ref), "--ignore", "warm_start"]) == 0
    (new / "figure.png").write_bytes(b"\x89PNG other")
    (new / "models" / "nemon" / "g0.5_s0" / "evaluation.json").unlink()
    assert compare.main([str(new), str(ref), "--ignore", "warm_start"]) == 1
    out = capsys.readouterr().out
    assert "figure.png: the bytes differ" in out
    assert "evaluation.json: missing in" in out


def test_a_json_value_differing_deep_inside_is_located(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"x": {"eps": [0.1, 0.3]}, "run_seconds": 1}))
    b.write_text(json.dumps({"x": {"eps": [0.1, 0.2]}, "run_seconds": 2}))
    assert compare.compare_file(a, b) == "x.eps.[1]: 0.3 != 0.2"


def test_bad_folders_get_a_clear_error(tmp_path, capsys):
    ref = _tree(tmp_path / "ref")
    assert compare.main([str(tmp_path / "nope"), str(ref)]) == 2
    assert "regenerated folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert compare.main([str(ref), str(tmp_path / "empty")]) == 2
    assert "holds no file to compare" in capsys.readouterr().err


def test_csv_values_equal_in_another_type_are_reported_as_such(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("n\n1\n")
    b.write_text("n\n1.5\n")
    assert compare.compare_file(a, b) == "row 0, column n: 1 != 1.5"
    b.write_text("n\n1.0\n")
    assert compare.compare_file(a, b).startswith("column types")
