"""papyan-2020's dataset and model options: the Fashion-MNIST subset and the paper-scale CNN recipe."""

from pathlib import Path

import pytest

from implicit_bias.data import files
from implicit_bias.errors import MissingFileError
from implicit_bias.experiments import resolve_config
from implicit_bias.experiments.papyan_2020 import FASHION_MNIST_FULL, _setup
from implicit_bias.models import build

needs_fashion = pytest.mark.skipif(
    not Path(files.FASHION_MNIST_ROOT).is_dir(),
    reason=f"Fashion-MNIST is not installed in {files.FASHION_MNIST_ROOT} (apt-get install dataset-fashion-mnist)",
)


def test_default_preset_is_unchanged_digits_with_the_mlp():
    config = resolve_config("papyan-2020", quick=True)
    assert (config.dataset, config.model, config.batch_size, config.per_class) == ("digits", None, None, 50)
    data, model = _setup(config)
    assert data.X.shape == (500, 1, 8, 8) and model.feature_names[-1] == "layer3"  # 10 classes × 50; depth 4


@needs_fashion
def test_fashion_override_loads_a_balanced_subset_of_28x28_images():
    config = resolve_config("papyan-2020", quick=True, overrides={"dataset": "fashion-mnist", "per_class": 3})
    data, model = _setup(config)
    assert data.X.shape == (30, 1, 28, 28) and data.class_counts.tolist() == [3] * 10
    assert data.test is not None and len(data.test) == 10_000
    assert model.feature_names[-1] == "layer3"


def test_fashion_full_recipe_resolves_and_builds_the_cnn():
    config = resolve_config("papyan-2020", quick=False, overrides=FASHION_MNIST_FULL)
    assert (config.dataset, config.per_class, config.batch_size) == ("fashion-mnist", 6000, 128)
    model = build(config.model, (1, 28, 28), 10)
    assert model.feature_names[-1] == "fc1" and model.head.in_features == 128
    # valid padding: 28 −5+1 = 24 → pool 12 → −3+1 = 10 → pool 5, so fc1 reads 32 × 5 × 5 features
    assert model.fc1[0].in_features == 32 * 5 * 5


def test_fashion_without_its_files_is_refused_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "FASHION_MNIST_ROOT", str(tmp_path / "absent"))
    config = resolve_config("papyan-2020", quick=True, overrides={"dataset": "fashion-mnist"})
    with pytest.raises(MissingFileError, match="apt-get install dataset-fashion-mnist"):
        _setup(config)
