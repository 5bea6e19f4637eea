"""Quasi-homogeneity: inferred rates against hand-derived ones, and the defining identities as invariants."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from implicit_bias.errors import InvalidArgumentError, NotQuasiHomogeneousError, UntraceableModelError
from implicit_bias.metrics import (
    asymmetric_margin,
    empirical_rates,
    lambda_seminorm,
    normalized_margin,
    rate_group_norms,
    rate_shares,
)
from implicit_bias.models import SplitLinear, WithOutputBias, build
from implicit_bias.symmetry import check_rates, infer_rates, rescale
from implicit_bias.train import History

EXACT = 1e-10


def inputs(shape: tuple[int, ...], n: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def without_norm_eps(model: nn.Module) -> nn.Module:
    """Normalization layers are scale-invariant only up to their ε; with a negligible ε the identities are exact."""
    for module in model.modules():
        if hasattr(module, "eps"):
            module.eps = 1e-300
    return model


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_bias_free_mlp_is_homogeneous_with_rates_one_over_depth(depth):
    model = build(f"mlp:depth={depth},width=6,bias=false", (5,), 3, seed=0).double()
    rates = infer_rates(model, inputs((5,)))
    assert all(value == pytest.approx(1 / depth, abs=1e-12) for value in rates.values())
    assert set(rates.top) == set(rates)


def test_bias_free_cnn_has_rates_one_quarter():
    model = build("cnn:bias=false,padding=same,channels=[3,4],hidden=8", (1, 8, 8), 3, seed=0).double()
    rates = infer_rates(model, inputs((1, 8, 8)))
    assert all(value == pytest.approx(0.25, abs=1e-12) for value in rates.values())


def test_mlp_with_biases_has_uniform_weight_rates_and_growing_bias_rates():
    depth = 4
    model = build(f"mlp:depth={depth},width=6", (5,), 3, seed=0).double()
    rates = infer_rates(model, inputs((5,)))
    layers = [f"layer{i}.0" for i in range(1, depth)] + ["head"]
    for index, layer in enumerate(layers, start=1):
        assert rates[f"{layer}.weight"] == pytest.approx(1 / depth, abs=1e-12)
        assert rates[f"{layer}.bias"] == pytest.approx(index / depth, abs=1e-12)
    assert rates.top == ("head.bias",) and rates.lambda_max == pytest.approx(1.0)


class TwoLayer(nn.Module):
    """W₂σ(W₁x + b₁) + b₂, the example of SCIENCE.md §3."""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = nn.Linear(4, 5), nn.Linear(5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(torch.relu(self.first(x)))


def test_family_of_two_layer_net_contains_both_textbook_choices():
    model = TwoLayer().double()
    rates = infer_rates(model, inputs((4,)))
    names = ["first.weight", "first.bias", "second.weight", "second.bias"]
    assert rates.family.dimension == 1
    assert rates.family.contains(dict(zip(names, (0.5, 0.5, 0.5, 1.0))))
    assert rates.family.contains(dict(zip(names, (0.0, 0.0, 1.0, 1.0))))
    assert not rates.family.contains(dict(zip(names, (0.5, 0.25, 0.5, 1.0))))
    assert not rates.family.contains(dict(zip(names, (1.5, 1.5, -0.5, 1.0))))  # valid equalities, negative rate


class ResidualMLP(nn.Module):
    """relu(W₁x) → h + W₃ relu(W₂h) → W₄: the residual sum forces the inner block's rates to 0."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(4, 6, bias=False)
        self.inner1, self.inner2 = nn.Linear(6, 6, bias=False), nn.Linear(6, 6, bias=False)
        self.out = nn.Linear(6, 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.inp(x))
        return self.out(h + self.inner2(torch.relu(self.inner1(h))))


def test_residual_block_weights_are_forced_to_rate_zero():
    model = ResidualMLP().double()
    X = inputs((4,))
    rates = infer_rates(model, X)
    assert rates["inner1.weight"] == pytest.approx(0, abs=1e-12)
    assert rates["inner2.weight"] == pytest.approx(0, abs=1e-12)
    assert rates["inp.weight"] == pytest.approx(0.5, abs=1e-12)
    assert rates["out.weight"] == pytest.approx(0.5, abs=1e-12)
    assert check_rates(model, rates, X).worst < EXACT


def test_layernorm_before_classifier_hand_derived_rates():
    # relu(W₁x + b₁) → LayerNorm(γ, β) → W₂ · + b₂: W₁, b₁ free (least norm: 0), λ_γ = λ_β = g, g + λ_W₂ = 1,
    # λ_b₂ = 1; least λ_W₁² + λ_γ² + λ_W₂² gives g = λ_W₂ = ½.
    model = build("mlp:depth=2,width=6,norm=layernorm", (5,), 3, seed=0).double()
    X = inputs((5,))
    rates = infer_rates(model, X)
    expected = {
        "layer1.0.weight": 0.0,
        "layer1.0.bias": 0.0,
        "layer1.1.weight": 0.5,
        "layer1.1.bias": 0.5,
        "head.weight": 0.5,
        "head.bias": 1.0,
    }
    assert dict(rates) == pytest.approx(expected, abs=1e-12)
    assert check_rates(model, rates, X).worst < EXACT


ZOO = [
    ("linear", (5,)),
    ("linear:bias=false", (5,)),
    ("mlp:depth=3,width=6", (5,)),
    ("mlp:depth=3,width=6,activation=leaky_relu,bias=false", (5,)),
    ("mlp:depth=3,width=6,norm=batchnorm", (5,)),
    ("mlp:depth=3,width=6,norm=layernorm", (5,)),
    ("cnn:padding=same,channels=[3,4],hidden=8", (1, 8, 8)),
    ("cnn:bias=false,padding=same,channels=[3,4],hidden=8", (12,)),
    ("resnet:width=4,stages=2", (1, 8, 8)),
    ("resnet:width=4,stages=2,norm=groupnorm,bias=false", (2, 12)),
    ("resnet:width=4,stages=2,norm=none", (1, 8, 8)),
]


@pytest.mark.parametrize("spec,shape", ZOO)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_every_model_in_the_zoo_gets_exact_rates_and_family_members(spec, shape, mode):
    model = without_norm_eps(build(spec, shape, 3, seed=0).double())
    model.train(mode == "train")
    X = inputs(shape)
    for choice in ("uniform", "last-layer"):
        rates = infer_rates(model, X, choice)
        assert check_rates(model, rates, X).worst < EXACT, (choice, rates.explain(model))
    uniform = infer_rates(model, X)
    for member in uniform.family.sample(3, seed=1):
        assert uniform.family.contains(member)
        assert check_rates(model, member, X).worst < 1e-9
        # "uniform" is the least Σ λ² over weights: no valid member does better
        assert weight_square_sum(uniform) <= weight_square_sum(member) + 1e-12


def weight_square_sum(rates) -> float:
    return sum(v**2 for n, v in rates.items() if not n.endswith("bias"))


def test_batchnorm_in_evaluation_mode_fixes_the_rates_before_it():
    model = build("mlp:depth=3,width=6,norm=batchnorm", (5,), 3, seed=0).double()
    X = inputs((5,))
    training = infer_rates(model.train(), X).family.dimension
    evaluating = infer_rates(model.eval(), X).family.dimension
    assert evaluating < training


def test_wrong_rates_break_the_identities():
    model = build("mlp:depth=3,width=6,bias=false", (5,), 3, seed=0).double()
    X = inputs((5,))
    wrong = {name: 0.5 for name, _ in model.named_parameters()}
    assert check_rates(model, wrong, X).worst > 0.1


class WithOp(nn.Module):
    def __init__(self, op) -> None:
        super().__init__()
        self.first, self.second, self.op = nn.Linear(4, 5), nn.Linear(5, 2), op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.op(self.first(x)))


@pytest.mark.parametrize(
    "op,word",
    [
        (nn.Tanh(), "Tanh"),
        (nn.GELU(), "GELU"),
        (torch.sigmoid, "sigmoid"),
        (lambda h: torch.softmax(h, dim=1), "softmax"),
        (lambda h: h + 1.0, "adds a constant"),
    ],
)
def test_non_homogeneous_operations_raise_naming_the_node(op, word):
    with pytest.raises(NotQuasiHomogeneousError, match=word) as caught:
        infer_rates(WithOp(op), inputs((4,)).float())
    assert "node '" in str(caught.value)


def test_non_homogeneous_preprocessing_of_the_input_is_allowed():
    class Preprocessed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(4, 2, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.tanh(x) + 1.0)

    model = Preprocessed().double()
    rates = infer_rates(model, inputs((4,)))
    assert rates["head.weight"] == pytest.approx(1.0)


class Branching(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = nn.Linear(4, 5, bias=False), nn.Linear(5, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.first(x))
        if h.sum() > 0:
            h = 2 * h
        return self.second(h)


def test_untraceable_model_gets_a_clear_error_and_explicit_rates_still_work():
    model = Branching().double()
    X = inputs((4,))
    with pytest.raises(UntraceableModelError, match="explicit rates"):
        infer_rates(model, X)
    rates = infer_rates(model, X, {"first.weight": 0.5, "second.weight": 0.5})
    assert rates.family is None and rates.lambda_max == 0.5
    with pytest.raises(NotQuasiHomogeneousError, match="relative error"):
        infer_rates(model, X, {"first.weight": 0.5, "second.weight": 0.25})


def test_explicit_rates_are_validated_against_the_graph():
    model = build("mlp:depth=2,width=6", (5,), 3, seed=0).double()
    X = inputs((5,))
    valid = {"layer1.0.weight": 0.2, "layer1.0.bias": 0.2, "head.weight": 0.8, "head.bias": 1.0}
    assert infer_rates(model, X, valid).choice == "given"
    with pytest.raises(NotQuasiHomogeneousError, match="node 'layer1_0'.*bias"):
        infer_rates(model, X, {**valid, "layer1.0.bias": 0.5})
    with pytest.raises(InvalidArgumentError, match="unknown parameters"):
        infer_rates(model, X, {"nope": 1.0})
    with pytest.raises(InvalidArgumentError, match="choice"):
        infer_rates(model, X, "biggest")


def test_last_layer_choice_needs_a_final_linear_layer():
    class Pooled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.head(x))

    with pytest.raises(InvalidArgumentError, match="last-layer"):
        infer_rates(Pooled(), torch.randn(4, 4), "last-layer")


def test_explain_lists_every_parameter_and_marks_the_top_rates():
    model = build("mlp:depth=2,width=6", (5,), 3, seed=0)
    text = infer_rates(model, inputs((5,)).float()).explain(model)
    for name, _ in model.named_parameters():
        assert name in text
    assert text.count("*") == 1 and "6×5" in text


@pytest.mark.parametrize("spec", ["mlp:depth=3,width=8", "mlp:depth=3,width=8,bias=false"])
def test_asymmetric_margin_is_invariant_under_rescaling(spec):
    torch.manual_seed(0)
    X = inputs((5,), n=40)
    model = build(spec, (5,), 2, seed=0).double()
    y = (model(X).squeeze(1) > 0).long()  # labels the model fits by construction
    rates = infer_rates(model, X)
    reference = asymmetric_margin(model, X, y, rates)
    for alpha in torch.empty(4).uniform_(-3, 3, generator=torch.Generator().manual_seed(1)).tolist():
        twin = rescale(build(spec, (5,), 2, seed=0).double(), alpha, rates)
        assert asymmetric_margin(twin, X, y, rates) == pytest.approx(reference, rel=1e-10)
        assert lambda_seminorm(twin, rates) == pytest.approx(
            math.exp(alpha * rates.lambda_max) * lambda_seminorm(model, rates), rel=1e-10
        )
    if "bias=false" in spec:  # Λ = I/L: the asymmetric margin is the normalized margin
        assert reference == pytest.approx(normalized_margin(model, X, y), rel=1e-10)


def test_rate_group_norms_partition_the_parameter_norm():
    model = build("mlp:depth=3,width=8", (5,), 2, seed=0).double()
    rates = infer_rates(model, inputs((5,)))
    groups = rate_group_norms(model, rates)
    assert list(groups) == sorted(groups, reverse=True)
    total = sum(p.detach().pow(2).sum() for p in model.parameters())
    assert sum(v**2 for v in groups.values()) == pytest.approx(float(total), rel=1e-12)


def test_empirical_rates_recover_the_rates_of_a_characteristic_curve():
    model = build("mlp:depth=3,width=8", (5,), 2, seed=0).double()
    X = inputs((5,))
    rates = infer_rates(model, X)
    history = History()
    for step, alpha in enumerate([0.0, 0.5, 1.3, 2.0, 3.1]):
        twin = rescale(build("mlp:depth=3,width=8", (5,), 2, seed=0).double(), alpha, rates)
        row = {f"norm/{n}": float(p.detach().norm()) for n, p in twin.named_parameters()}
        row.update(step=step, output_rms=float(twin(X).detach().pow(2).mean().sqrt()))
        history.append(row)
    measured = empirical_rates(history, tail=1.0)
    assert measured == pytest.approx(dict(rates), abs=1e-9)
    with pytest.raises(InvalidArgumentError, match="output_rms"):
        empirical_rates(History([{"step": 0}]))


def test_rate_shares_are_invariant_under_rescaling_and_sum_to_one():
    model = build("mlp:depth=3,width=8", (5,), 2, seed=0).double()
    rates = infer_rates(model, inputs((5,)))
    shares = rate_shares(model, rates)
    assert sum(shares.values()) == pytest.approx(1.0, rel=1e-12)
    twin = rescale(build("mlp:depth=3,width=8", (5,), 2, seed=0).double(), 2.5, rates)
    assert rate_shares(twin, rates) == pytest.approx(shares, rel=1e-10)


def test_split_linear_rates_and_with_output_bias_rates():
    X = inputs((7,))
    split = SplitLinear(3, 4).double()
    assert dict(infer_rates(split, X)) == pytest.approx({"u": 0.5, "v": 0.5, "w": 1.0}, abs=1e-12)
    model = WithOutputBias(build("mlp:depth=3,width=6,bias=false", (7,), 2, seed=0)).double()
    rates = infer_rates(model, X)
    assert rates["bias"] == pytest.approx(1.0) and rates.top == ("bias",)
    assert all(rates[n] == pytest.approx(1 / 3) for n in rates if n != "bias")
    assert check_rates(model, rates, X).worst < EXACT


def test_asymmetric_and_spectra_probes_log_what_the_metrics_compute():
    from implicit_bias.data import load
    from implicit_bias.metrics import layer_spectra
    from implicit_bias.train import fit, make_probe

    data = load("gaussians", n_per_class=20, seed=0)
    model = build("mlp:depth=3,width=16", data.input_shape, data.num_classes, seed=0)
    probes = [make_probe("asymmetric"), make_probe("spectra"), make_probe("norms")]
    history = fit(model, data, loss="cross-entropy", optimizer="gd", lr=0.5, steps=300, probes=probes, progress=False)
    last = history.last
    rates = infer_rates(model, data.X)
    assert last["asymmetric_margin"] == pytest.approx(asymmetric_margin(model, data.X, data.y, rates), rel=1e-9)
    assert last["rate_share/1"] == pytest.approx(rate_shares(model, rates)[1.0], rel=1e-9)
    assert last["stable_rank/layer2.0.weight"] == pytest.approx(layer_spectra(model)["layer2.0.weight"].stable_rank)
    assert "output_rms" in last
