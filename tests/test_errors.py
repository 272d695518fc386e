"""Bad input raises a clear exception that names the offending value."""

import pytest
import torch
from conftest import make_model

import nemon
from nemon.training import train


@pytest.mark.parametrize("gamma", [1.0, 1.5, float("inf"), float("nan")])
def test_gamma_not_below_one_is_rejected(gamma):
    with pytest.raises(nemon.ConfigurationError, match="gamma"):
        nemon.NEMON(4, 3, 2, gamma=gamma)


def test_unknown_solver_is_rejected_with_the_known_names():
    with pytest.raises(nemon.ConfigurationError, match="'newton'.*anderson.*average.*picard"):
        nemon.NEMON(4, 3, 2, gamma=0.5, solver="newton")


def test_unknown_keyword_argument_is_an_error():
    with pytest.raises(TypeError, match="tolerance"):
        nemon.NEMON(4, 3, 2, gamma=0.5, tolerance=1e-3)


@pytest.mark.parametrize(
    "kw, name",
    [
        ({"tol": 0.0}, "tol"),
        ({"tol": -1.0}, "tol"),
        ({"max_iter": 0}, "max_iter"),
        ({"input_std": 0.0}, "input_std"),
        ({"input_std": torch.ones(5)}, "input_std"),
        ({"input_mean": float("nan")}, "input_mean"),
    ],
)
def test_bad_hyperparameters_name_themselves(kw, name):
    with pytest.raises((nemon.ConfigurationError, nemon.NonFiniteError), match=name):
        nemon.NEMON(4, 3, 2, gamma=0.5, **kw)


@pytest.mark.parametrize("dims", [(0, 3, 2), (4, -1, 2), (4, 3, 2.5)])
def test_bad_sizes_are_rejected(dims):
    with pytest.raises(nemon.ConfigurationError, match="must be a positive integer"):
        nemon.NEMON(*dims, gamma=0.5)


def test_non_finite_input_is_rejected():
    model = make_model()
    u = torch.rand(3, 12, dtype=torch.float64)
    u[1, 4] = float("nan")
    with pytest.raises(nemon.NonFiniteError, match=r"NEMON.forward: .* 1 non-finite value"):
        model(u)


@pytest.mark.parametrize("param, where", [("T", "T or d"), ("d", "T or d"), ("B", "B, b")])
def test_non_finite_weights_are_rejected(param, where):
    model = make_model()
    with torch.no_grad():
        getattr(model, param).view(-1)[0] = float("inf")
    with pytest.raises(nemon.NonFiniteError, match=where):
        model(torch.rand(3, 12, dtype=torch.float64))


def test_shape_mismatch_names_the_shape():
    model = make_model()
    with pytest.raises(ValueError, match=r"\(3, 11\).*in_features=12"):
        model(torch.rand(3, 11, dtype=torch.float64))


def test_image_shaped_input_is_flattened():
    model = nemon.NEMON(16, 5, 3, gamma=0.0)
    assert model(torch.rand(7, 1, 4, 4)).shape == (7, 3)
    assert model(torch.rand(2, 7, 16)).shape == (2, 7, 3)


def test_mu_inf_rejects_non_square_and_bad_weights():
    with pytest.raises(ValueError, match="square"):
        nemon.mu_inf(torch.ones(2, 3))
    with pytest.raises(ValueError, match="positive"):
        nemon.mu_inf(torch.ones(2, 2), torch.tensor([1.0, -1.0]))


def test_nan_during_training_stops_with_epoch_and_step():
    model = nemon.NEMON(4, 3, 2, gamma=0.5)
    x = torch.rand(20, 4)
    y = torch.randint(0, 2, (20,))
    with pytest.raises(nemon.NonFiniteError, match="epoch 1, step 1"):
        train(model, x, y, epochs=1, batch_size=10, lr=1e-3, lam=1e308, seed=0, progress=False)


def test_training_arguments_are_validated():
    model = nemon.NEMON(4, 3, 2, gamma=0.5)
    x, y = torch.rand(20, 4), torch.randint(0, 2, (20,))
    with pytest.raises(nemon.ConfigurationError, match="lam"):
        train(model, x, y, epochs=1, batch_size=10, lr=1e-3, lam=-1.0, seed=0)
    with pytest.raises(nemon.ConfigurationError, match="lr"):
        train(model, x, y, epochs=1, batch_size=10, lr=0.0, lam=0.0, seed=0)


def test_a_command_line_tool_ends_a_nemon_error_with_its_message_not_a_traceback():
    from nemon.errors import ConfigurationError, DatasetError, exit_from

    for err in (ConfigurationError("--rounds must be at least 1"), DatasetError("no data")):

        def main(err=err):
            raise err

        with pytest.raises(SystemExit) as e:
            exit_from(main)
        assert e.value.code == f"error: {err}"  # printed to stderr, status 1
    with pytest.raises(SystemExit) as e:
        exit_from(lambda: 3)
    assert e.value.code == 3
    with pytest.raises(KeyError):  # a bug stays a traceback
        exit_from(lambda: {}["x"])
