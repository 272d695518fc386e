"""Stage files: every fault injected into a model file or a record is caught and named.

The model file's hash, the records' schemas, their agreement with their folders, the
aggregation's refusal of non-converged numbers and of broken orderings (MATH 11).
"""

import copy
import json

import pandas as pd
import pytest
import torch

import nemon
from nemon.aggregate import NotConvergedError, OrderingError, summarise
from nemon.config import load_schema
from nemon.contracts import (
    EVALUATION_SCHEMA,
    EXPERIMENT_PATTERN,
    FOLDER_KEYS,
    METRICS_SCHEMA,
    OBJECTIVE_AXIS,
    POINT_KEYS,
    ROBUSTNESS_COLUMNS,
    keys_from_path,
    load_model,
    member_name,
    point_dir,
    point_keys,
    read_json_record,
    save_model,
    write_json,
)
from nemon.errors import ConfigurationError, CorruptFileError
from nemon.evaluation import EvalSettings, evaluate_model
from nemon.training import to_pixels

KEYS = point_keys("mnist-5k", "paper", "nemon", "lipschitz", 0.5, 1e-3, 0)


@pytest.fixture
def model_file(tmp_path):
    torch.manual_seed(0)
    model = nemon.NEMON(12, 6, 3, gamma=0.5)
    path = tmp_path / "model.pt"
    return model, path, save_model(model, path)


def test_a_model_file_round_trips_and_its_hash_is_checked(model_file):
    model, path, sha = model_file
    back = load_model(path, sha256=sha)
    for (n, p), (_, q) in zip(model.state_dict().items(), back.state_dict().items(), strict=True):
        assert torch.equal(p, q), n
    assert back.constructor_kwargs() == model.constructor_kwargs()


def test_a_model_file_with_one_flipped_byte_is_refused_naming_it(model_file):
    _, path, sha = model_file
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match=r"model\.pt.*sha.*delete it.*rule train rebuilds"):
        load_model(path, sha256=sha)


def test_a_truncated_model_file_is_refused_naming_it(model_file):
    _, path, _ = model_file
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CorruptFileError, match=r"model\.pt"):
        load_model(path, sha256=None)


@pytest.mark.parametrize("kind", ["nemon", "nemon-unweighted", "mlp", "mon"])
def test_every_model_kind_round_trips(kind, tmp_path):
    torch.manual_seed(1)
    model = nemon.contracts.build_model(
        kind,
        in_features=8,
        hidden=5,
        out_features=3,
        gamma=0.5,
        input_mean=0.1,
        input_std=0.3,
        solver={"solver": "average", "tol": 1e-4, "max_iter": 300, "stop": "step"},
    )
    sha = save_model(model, tmp_path / "m.pt")
    back = load_model(tmp_path / "m.pt", sha256=sha)
    assert type(back) is type(model) and nemon.contracts.model_name(back) == kind
    u = torch.rand(4, 8)
    torch.testing.assert_close(back(u), model(u))


def test_folders_name_their_grid_points_by_experiment():
    d = point_dir("smoke/results", "mnist-5k", "followup-mlp", "interval", 0.0, 0.1, 3)
    assert d == "smoke/results/mnist-5k/models/followup-mlp/g0.0_e0.1_s3"
    keys = point_keys("mnist-5k", "followup-mlp", "mlp", "interval", 0.0, 0.1, 3)
    assert keys["experiment"] == "followup-mlp" and list(keys) == POINT_KEYS
    # the folder names every key but the model (the records name it)
    assert keys_from_path(d + "/metrics.json") == {k: keys[k] for k in FOLDER_KEYS}
    assert FOLDER_KEYS == [k for k in POINT_KEYS if k != "model"]
    d = point_dir("results", "fashion-mnist", "paper", "lipschitz", 0.9, 1e-4, 0)
    assert d == "results/fashion-mnist/models/paper/g0.9_l0.0001_s0"
    assert keys_from_path(d + "/robustness.csv")["lam"] == 1e-4


def test_a_file_of_the_old_model_objective_layout_is_refused_naming_the_layout():
    with pytest.raises(ConfigurationError, match=r"models/<experiment>/<point>/"):
        keys_from_path("results/mnist-5k/models/nemon/lipschitz/g0.5_l0.001_s0/metrics.json")


def test_member_names_follow_the_objectives_axis():
    assert member_name("lipschitz", 1e-3) == "lam=0.001"
    assert member_name("interval", 0.1) == "eps_t=0.1"
    assert {o: member_name(o, 0.0).split("=")[0] for o in OBJECTIVE_AXIS} == {
        o: axis for o, (axis, _) in OBJECTIVE_AXIS.items()
    }


def test_the_records_and_the_config_schema_allow_the_same_experiment_names():
    schema = load_schema()
    assert schema["properties"]["experiments"]["propertyNames"]["pattern"] == EXPERIMENT_PATTERN
    assert METRICS_SCHEMA["properties"]["experiment"]["pattern"] == EXPERIMENT_PATTERN


def metrics_record():
    return {
        **KEYS,
        "mu": 0.5,
        "lipschitz_bound": 12.0,
        "epochs": 2,
        "fwd_iters_mean": 5.0,
        "fwd_iters_max": 7,
        "bwd_iters_mean": 4.0,
        "bwd_iters_max": 6,
        "not_converged": 0,
        "final_train_loss": 0.3,
        "loss_rel_change": 0.01,
        "bound_rel_change": 0.02,
        "training_converged": True,
        "train_seconds": 1.0,
        "model_sha256": "0" * 64,
        "history": [{}],
        "provenance": {},
    }


def evaluation_record():
    return {
        **KEYS,
        "clean_acc": 0.9,
        "clean_not_converged": 0,
        "lipschitz_lower": 2.0,
        "lipschitz_bound": 12.0,
        "lipschitz_tightness": 6.0,
        "evaluation_seconds": 1.0,
        "settings": {},
        "provenance": {},
    }


BAD_RECORDS = {
    "accuracy_7.5": (EVALUATION_SCHEMA, evaluation_record, {"clean_acc": 7.5}, "clean_acc"),
    "missing_bound": (METRICS_SCHEMA, metrics_record, {"lipschitz_bound": None}, "lipschitz_bound"),
    "gamma_of_another_folder": (METRICS_SCHEMA, metrics_record, {"gamma": 0.9}, "gamma is 0.9"),
    "seed_of_another_folder": (EVALUATION_SCHEMA, evaluation_record, {"seed": 4}, "seed is 4"),
    "experiment_of_another_folder": (
        METRICS_SCHEMA,
        metrics_record,
        {"experiment": "certified"},
        "experiment is 'certified' but its folder says 'paper'",
    ),
    "no_experiment": (EVALUATION_SCHEMA, evaluation_record, {"experiment": None}, "experiment"),
    "experiment_no_folder": (METRICS_SCHEMA, metrics_record, {"experiment": "a/b"}, "experiment"),
    "nan_bound": (METRICS_SCHEMA, metrics_record, {"lipschitz_bound": float("nan")}, "lipschitz"),
    "bad_hash": (METRICS_SCHEMA, metrics_record, {"model_sha256": "xyz"}, "model_sha256"),
}


@pytest.mark.parametrize("name", BAD_RECORDS)
def test_an_impossible_record_is_refused_naming_the_file_and_the_key(name, tmp_path):
    schema, make, change, expected = BAD_RECORDS[name]
    record = make()
    for k, v in change.items():
        if v is None:
            del record[k]
        else:
            record[k] = v
    path = tmp_path / "record.json"
    path.write_text(json.dumps(record))
    with pytest.raises(CorruptFileError) as e:
        read_json_record(path, schema, expect=KEYS, fix="rebuild it")
    assert str(path) in str(e.value) and expected in str(e.value) and "rebuild it" in str(e.value)


def test_a_truncated_record_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(metrics_record())[:50])
    with pytest.raises(CorruptFileError, match=r"metrics\.json.*not valid JSON"):
        read_json_record(path, METRICS_SCHEMA, fix="rebuild it")


# --- evaluation and aggregation --------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_evaluation(tmp_path_factory):
    """One evaluated model laid out as the workflow lays it out."""
    torch.manual_seed(0)
    model = nemon.NEMON(784, 20, 10, gamma=0.5, input_mean=0.5, input_std=0.3)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(60, 28, 28, generator=g) * 255).to(torch.uint8)
    y = torch.arange(60) % 10
    settings = EvalSettings(
        tol=1e-5,
        max_iter=2000,
        attack_tol=1e-4,
        batch_size=30,
        inversion_eps=(0.0, 0.1),
        lipschitz_eps=(0.0, 0.05),
        interval_eps=(0.0, 0.05),
        pgd=nemon.evaluation.AttackSettings(eps=(0.05,), images=20, steps=3, restarts=1),
        autoattack=nemon.evaluation.AttackSettings(eps=(), images=10),
        lower_bound_images=1,
        lower_bound_steps=2,
    )
    return model, x, y, settings, tmp_path_factory.mktemp("agg")


def lay_out(root, model, rows, record, experiment="paper", evaluated_as=None):
    """One model's three files in its folder; ``evaluated_as``: another model key in the
    evaluation's files (a mix-up)."""
    keys = {**KEYS, "experiment": experiment}
    d = root / point_dir("results", "mnist-5k", experiment, "lipschitz", 0.5, 1e-3, 0)
    d.mkdir(parents=True, exist_ok=True)
    metrics = {**metrics_record(), **keys}
    metrics["model_sha256"] = save_model(model, d / "model.pt")
    write_json(d / "metrics.json", metrics)
    evaluated = {**keys, "model": evaluated_as or keys["model"]}
    write_json(d / "evaluation.json", {**evaluated, **record, "provenance": {}})
    pd.DataFrame(rows).assign(**evaluated)[ROBUSTNESS_COLUMNS].to_csv(
        d / "robustness.csv", index=False
    )
    return [str(d / n) for n in ("metrics.json", "evaluation.json", "robustness.csv")]


def test_evaluation_with_too_few_iterations_is_recorded_and_refused(tiny_evaluation):
    model, x, y, settings, root = tiny_evaluation
    starved = copy.replace(settings, max_iter=1) if hasattr(copy, "replace") else None
    starved = starved or EvalSettings(**{**settings.__dict__, "max_iter": 1})
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows, record = evaluate_model(model, x, y, starved)
    assert record["clean_not_converged"] > 0
    assert all(r["not_converged"] > 0 for r in rows if r["attack"] in ("clean", "inversion"))
    files = lay_out(root / "starved", model, rows, record)
    with pytest.raises(NotConvergedError, match="evaluation.max_iter"):
        summarise([files[0]], [files[1]], [files[2]])
    summary, rob = summarise([files[0]], [files[1]], [files[2]], allow_not_converged=True)
    assert (rob["not_converged"] > 0).any()


def test_a_broken_ordering_is_refused_naming_the_model(tiny_evaluation):
    model, x, y, settings, root = tiny_evaluation
    rows, record = evaluate_model(model, x, y, settings)
    files = lay_out(root / "ok", model, rows, record)
    summary, rob = summarise([files[0]], [files[1]], [files[2]])
    assert len(summary) == 1 and (rob["violations"] == 0).all()
    # a certificate above an attack on the same inputs is a bug, never a figure
    bad = [dict(r) for r in rows]
    for r in bad:
        if r["attack"] == "certified_lipschitz" and r["eps"] == 0.05 and r["inputs"] != "test":
            r["accuracy"] = 1.0
    files = lay_out(root / "bad", model, bad, record)
    with pytest.raises(OrderingError, match=r"paper.*nemon.*certified_lipschitz 1\.0000 >"):
        summarise([files[0]], [files[1]], [files[2]])


def test_two_experiments_of_one_model_and_objective_are_two_rows_checked_apart(tiny_evaluation):
    """Experiments 'again' and 'paper' hold the same model, objective, gamma, lam and seed:
    both get their rows, keyed by experiment, and a broken ordering in the second is found
    (keyed without the experiment, the first one's rows would hide it)."""
    model, x, y, settings, root = tiny_evaluation
    rows, record = evaluate_model(model, x, y, settings)
    bad = [dict(r) for r in rows]
    for r in bad:
        if r["attack"] == "certified_lipschitz" and r["eps"] == 0.05 and r["inputs"] != "test":
            r["accuracy"] = 1.0
    ok = lay_out(root / "two", model, rows, record, experiment="again")
    files = lay_out(root / "two", model, rows, record, experiment="paper")
    summary, rob = summarise([ok[0], files[0]], [ok[1], files[1]], [ok[2], files[2]])
    assert list(summary["experiment"]) == ["again", "paper"]
    rest = summary.drop(columns="experiment")
    assert rest.iloc[0].equals(rest.iloc[1])  # the same model in all but the experiment
    assert set(rob["experiment"]) == {"again", "paper"} and len(rob) == 2 * len(rows)
    files = lay_out(root / "two", model, bad, record, experiment="paper")
    with pytest.raises(OrderingError, match=r"^1 ordering.*.experiment.: .paper.*certified_lips"):
        summarise([ok[0], files[0]], [ok[1], files[1]], [ok[2], files[2]])


def test_an_evaluation_of_another_model_kind_than_the_training_record_is_refused(
    tiny_evaluation,
):
    model, x, y, settings, root = tiny_evaluation
    rows, record = evaluate_model(model, x, y, settings)
    files = lay_out(root / "mixed", model, rows, record, evaluated_as="mlp")
    with pytest.raises(CorruptFileError, match=r"evaluation\.json: model is 'mlp' but"):
        summarise([files[0]], [files[1]], [files[2]])


def test_reused_solves_give_what_solving_again_gives(tiny_evaluation):
    # inversion at eps 0 is the clean pass itself; the interval certificate takes the clean
    # pass's correctness: both must equal what their own solves give
    model, x, y, settings, _ = tiny_evaluation
    rows, _ = evaluate_model(model, x, y, settings)
    by = {(r["attack"], r["eps"], r["inputs"]): r for r in rows}
    keys = ("accuracy", "top_class_fraction", "not_converged", "images", "degenerate")
    for (attack, eps, inputs), r in by.items():
        if attack == "inversion" and eps == 0.0:
            assert {k: r[k] for k in keys} == {k: by["clean", 0.0, inputs][k] for k in keys}
    u = to_pixels(x)
    with model.solving(tol=settings.tol, max_iter=settings.max_iter, stop="step"):
        inverted = model(nemon.inversion_attack(u, 0.0)).argmax(dim=1)
        assert by["inversion", 0.0, "test"]["accuracy"] == float((inverted == y).double().mean())
        for eps in settings.interval_eps:
            own = nemon.certified_mask(model, u, y, eps, method="interval")
            assert by["certified_interval", eps, "test"]["accuracy"] == float(own.double().mean())
