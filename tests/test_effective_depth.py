"""Effective depth on hand-built features with known separability."""

import pytest
import torch

from implicit_bias.metrics import effective_depth


class Fixed(torch.nn.Module):
    """Ignores its input's values and emits a stored feature matrix (rows in input order)."""

    def __init__(self, features):
        super().__init__()
        self.register_buffer("features", features)

    def forward(self, index):
        return self.features[index.long().flatten()]


class Network(torch.nn.Module):
    def __init__(self, first, second, third):
        super().__init__()
        self.layer1, self.layer2, self.layer3 = Fixed(first), Fixed(second), Fixed(third)
        self.head = torch.nn.Linear(third.shape[1], 3).double()

    def forward(self, index):
        self.layer1(index)
        self.layer2(index)
        return self.head(self.layer3(index))


def network():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(3).repeat(10)
    noise = torch.randn(30, 3, generator=g, dtype=torch.float64)
    separated = 10 * torch.eye(3, dtype=torch.float64)[y] + 0.1 * noise
    model = Network(noise, separated, 2 * separated)
    return model, torch.arange(30, dtype=torch.float64)[:, None], y


@pytest.mark.parametrize("batch_size", [1, 7, 1024])
def test_features_separated_from_layer_two_give_effective_depth_two(batch_size):
    model, index, y = network()
    result = effective_depth(
        model, (index, y), eps=0.0, layers=["layer1", "layer2", "layer3"], num_classes=3, batch_size=batch_size
    )
    assert result.depth == 2
    assert result.ncc_train_error[1] == result.ncc_train_error[2] == 0.0
    assert result.ncc_train_error[0] > 0.3  # noise: NCC is near chance
    assert result.cdnv[1] < 1e-3 < result.cdnv[0]


def test_no_layer_fitting_gives_no_depth():
    model, index, y = network()
    result = effective_depth(model, (index, y), eps=0.0, layers=["layer1"], num_classes=3)
    assert result.depth is None and result.ncc_train_error[0] > 0


class Family(torch.nn.Module):
    """A 'trained network of depth d' whose last feature layer separates the classes only when d ≥ 3."""

    def __init__(self, depth, separated, noise):
        super().__init__()
        self.last = Fixed(separated if depth >= 3 else noise)
        self.head = torch.nn.Linear(separated.shape[1], 3).double()
        self.feature_names = ("last",)

    def forward(self, index):
        return self.head(self.last(index))


def test_minimal_ncc_depth_finds_the_first_depth_that_fits_and_stops_there():
    from implicit_bias.metrics import minimal_ncc_depth

    model, index, y = network()
    tried = []

    def train(depth):
        tried.append(depth)
        return Family(depth, model.layer2.features, model.layer1.features)

    result = minimal_ncc_depth(train, (index, y), [5, 2, 3, 4], eps=0.0, num_classes=3)
    assert result.depth == 3 and tried == [2, 3]
    assert result.errors[2] > 0.3 and result.errors[3] == 0.0
    assert minimal_ncc_depth(train, (index, y), [1, 2], eps=0.0, num_classes=3).depth is None


def test_depth_bound_counts_runs_at_least_as_deep_as_the_noisy_minimum():
    from implicit_bias.metrics import depth_bound

    bound = depth_bound([2, 3, 4, None], minimal_depth_noisy=3, noise=0.25, alpha=0.2)
    assert bound.probability == 0.75 and bound.noise_term == pytest.approx(0.3) and bound.bound == pytest.approx(1.05)
    assert depth_bound([1, 2], 3, 0.0).bound == 0.0
