"""Loading, splitting and standardising data, and mapping results back to the original scale."""

import numpy as np
import pytest

from jaxlinear import ConfigError, DataError, LinearWeights, least_squares, load_dataset


def test_diabetes_shapes_and_standardisation(diabetes):
    assert diabetes.summary() == {
        "name": "diabetes",
        "n_train": 353,
        "n_test": 89,
        "in_features": 10,
        "out_features": 1,
    }
    np.testing.assert_allclose(diabetes.x_train.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(diabetes.x_train.std(axis=0), 1, rtol=1e-12)
    # Test rows are scaled with training statistics, so they are not exactly standard.
    assert np.abs(diabetes.x_test.mean(axis=0)).max() > 1e-3


def test_linnerud_is_multi_output(linnerud):
    assert (linnerud.in_features, linnerud.out_features) == (3, 3)
    assert linnerud.target_names == ("Weight", "Waist", "Pulse")


def test_split_is_seeded():
    a, b, c = (load_dataset("diabetes", seed=s) for s in (0, 0, 1))
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.x_train, c.x_train)


def test_weights_on_original_scale_reproduce_predictions(diabetes):
    weights = least_squares(diabetes.x_train, diabetes.y_train)
    scaling = diabetes.scaling
    original = scaling.weights_to_original(weights)
    x_raw = diabetes.x_test * scaling.x_scale + scaling.x_mean
    np.testing.assert_allclose(scaling.features(x_raw), diabetes.x_test, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        original.predict(x_raw),
        scaling.targets_to_original(weights.predict(diabetes.x_test)),
        rtol=1e-10,
    )


def test_synthetic_recovers_true_weights_without_noise():
    data = load_dataset("synthetic", noise=0.0, n_samples=200, in_features=5, out_features=2)
    fitted = data.scaling.weights_to_original(least_squares(data.x_train, data.y_train))
    np.testing.assert_allclose(fitted.weight, data.true_weights.weight, atol=1e-10)
    np.testing.assert_allclose(fitted.bias, data.true_weights.bias, atol=1e-10)


def test_csv_round_trip(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b,t\n" + "\n".join(f"{i},{i * i % 7},{2 * i + 1}" for i in range(10)))
    data = load_dataset(str(path), targets=("t",))
    assert data.feature_names == ("a", "b") and data.target_names == ("t",)
    fitted = data.scaling.weights_to_original(least_squares(data.x_train, data.y_train))
    np.testing.assert_allclose(fitted.weight[:, 0], [2.0, 0.0], atol=1e-9)


@pytest.mark.parametrize(
    ("content", "targets", "message"),
    [
        ("a,t\n1,2\n3,4\n", ("y",), "no column named 'y'"),
        ("a,t\nx,2\ny,4\n", ("t",), "feature column 'a' is not numeric"),
        ("a,t\n1,2\n,4\n3,5\n", ("t",), "feature column 'a' has 1 missing"),
        ("a,t\n1,2\ninf,4\n3,5\n", ("t",), "feature column 'a' has 1 missing, NaN or infinite"),
        ("a,t\n1,2\n", ("t",), "leave 0 for training"),
        ("a,t\n1,2\n3,4\n", (), "targets must name the target column"),
    ],
)
def test_csv_errors_name_the_problem(tmp_path, content, targets, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises((DataError, ConfigError), match=message.replace("(", r"\(")):
        load_dataset(str(path), targets=targets)


def test_unknown_dataset_and_missing_file():
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("iris")
    with pytest.raises(DataError, match="not found"):
        load_dataset("/nonexistent/data.csv", targets=("y",))


def test_canonical_shape_check():
    with pytest.raises(ValueError, match="bias"):
        LinearWeights(np.zeros((3, 2)), np.zeros(3)).check_shapes()


def test_builtin_data_equals_scikit_learns_loaders():
    from sklearn.datasets import load_diabetes, load_linnerud

    from jaxlinear.data import _load_diabetes, _load_linnerud

    for ours, theirs in (
        (_load_diabetes(), load_diabetes(scaled=False)),
        (_load_linnerud(), load_linnerud()),
    ):
        x, y, feature_names, target_names = ours
        np.testing.assert_array_equal(x, theirs.data)
        np.testing.assert_array_equal(y, theirs.target)
        assert feature_names == tuple(theirs.feature_names)
    assert target_names == tuple(load_linnerud().target_names)
