"""Rates Λ of models written the way people write PyTorch — out of call order, functional, tied, looped, with an
unused head, GELU, attention, batch norm — each checked against the defining identities (Kunin et al. 2023,
Def. 3.1 and the Euler identity) and, where the family has one least-norm member, against the hand-derived Λ."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from implicit_bias.errors import NotQuasiHomogeneousError, UntraceableModelError
from implicit_bias.symmetry import check_rates, infer_rates, register_rule

EXACT = 1e-10


def inputs(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def assert_exact(model: nn.Module, rates, X: torch.Tensor) -> None:
    check = check_rates(model, rates, X)
    assert check.worst <= EXACT, (check, rates.explain(model))


class OutOfOrder(nn.Module):
    """head(relu(body(x))) with the head declared first: parameters are listed before they are used."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(6, 3)
        self.body = nn.Linear(5, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.body(x)))


def test_declaration_order_does_not_matter():
    # W₂ relu(W₁x + b₁) + b₂: least λ_W₁² + λ_W₂² with λ_W₁ + λ_W₂ = 1 → ½, ½; λ_b₁ = ½, λ_b₂ = 1.
    model, X = OutOfOrder().double(), inputs(16, 5)
    rates = infer_rates(model, X)
    assert dict(rates) == pytest.approx(
        {"head.weight": 0.5, "head.bias": 1.0, "body.weight": 0.5, "body.bias": 0.5}, abs=1e-12
    )
    assert rates.top == ("head.bias",)
    assert rates.shifts == {"head.bias", "body.bias"}
    assert_exact(model, rates, X)


class DenseSkip(nn.Module):
    """head(cat([x, relu(fc1(x))])): the raw input (degree 0) joins the hidden features."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.head = nn.Linear(5, 4), nn.Linear(9, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([x, F.relu(self.fc1(x))], dim=1))


class MaxWithInput(nn.Module):
    """maximum / where / stack with the raw input: the same rule as cat."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.head = nn.Linear(5, 5), nn.Linear(10, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        joined = torch.stack([torch.maximum(h, x), torch.where(x > 0, h, x)], dim=1)
        return self.head(joined.flatten(1))


@pytest.mark.parametrize("model_class", [DenseSkip, MaxWithInput])
def test_joining_the_raw_input_forces_the_joined_branch_to_degree_zero(model_class):
    model, X = model_class().double(), inputs(16, 5)
    rates = infer_rates(model, X)
    assert dict(rates) == {"fc1.weight": 0.0, "fc1.bias": 0.0, "head.weight": 1.0, "head.bias": 1.0}
    assert_exact(model, rates, X)


class Tied(nn.Module):
    """An encoder whose weight is reused transposed as the decoder, then a head: degree 2λ_E + λ_H."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(5, 8, bias=False)
        self.head = nn.Linear(5, 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        decoded = F.linear(torch.relu(self.encoder(x)), self.encoder.weight.t())
        return self.head(decoded)


class SharedBlock(nn.Module):
    """One block applied twice: λ_in + 2λ_block + λ_head = 1."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.block, self.head = (nn.Linear(5, 6, bias=False), nn.Linear(6, 6, bias=False),
                                           nn.Linear(6, 2, bias=False))  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.inp(x))
        for _ in range(2):
            h = torch.relu(self.block(h))
        return self.head(h)


def test_tied_and_shared_parameters_get_one_rate():
    # least Σλ² on a·λ = 1 is λ = a/‖a‖²: tied (2, 1) → (2/5, 1/5); shared (1, 2, 1) → (1/6, 1/3, 1/6).
    X = inputs(16, 5)
    tied = Tied().double()
    rates = infer_rates(tied, X)
    assert dict(rates) == pytest.approx({"encoder.weight": 0.4, "head.weight": 0.2}, abs=1e-12)
    assert_exact(tied, rates, X)
    shared = SharedBlock().double()
    rates = infer_rates(shared, X)
    assert dict(rates) == pytest.approx({"inp.weight": 1 / 6, "block.weight": 1 / 3, "head.weight": 1 / 6}, abs=1e-12)
    assert_exact(shared, rates, X)


class Functional(nn.Module):
    """A biased 3-layer MLP from raw parameters: addmm, @ with +, F.linear; biases not named 'bias'."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.W1, self.b1 = nn.Parameter(torch.randn(5, 6, generator=g)), nn.Parameter(torch.randn(6, generator=g))
        self.W2, self.b2 = nn.Parameter(torch.randn(6, 6, generator=g)), nn.Parameter(torch.randn(6, generator=g))
        self.W3, self.b3 = nn.Parameter(torch.randn(2, 6, generator=g)), nn.Parameter(torch.randn(2, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(torch.addmm(self.b1, x, self.W1))
        h = F.relu(h @ self.W2 + self.b2)
        return F.linear(h, self.W3, self.b3)


def test_functional_style_and_shifts_recognised_from_the_graph():
    # Uniform rates of a depth-3 MLP with biases: λ_W = 1/3, λ_{b_l} = l/3 — only if b1…b3 are known as shifts.
    model, X = Functional().double(), inputs(16, 5)
    rates = infer_rates(model, X)
    expected = {"W1": 1 / 3, "b1": 1 / 3, "W2": 1 / 3, "b2": 2 / 3, "W3": 1 / 3, "b3": 1.0}
    assert dict(rates) == pytest.approx(expected, abs=1e-12)
    assert rates.shifts == {"b1", "b2", "b3"}
    assert_exact(model, rates, X)


class Looped(nn.Module):
    """A ModuleList loop with in-place ReLU, Identity, Dropout: a bias-free MLP of depth 4."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(5, 6, bias=False)] + [nn.Linear(6, 6, bias=False) for _ in range(2)])
        self.extras = nn.ModuleDict({"skip": nn.Identity(), "drop": nn.Dropout(0.2)})
        self.head = nn.Linear(6, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x).relu_()
            x = self.extras["drop"](self.extras["skip"](x))
        return self.head(x)


class SmallCNN(nn.Module):
    """Bias-free conv → pool → conv → pool → permute/view → linear: homogeneous of degree 3."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 3, 3, padding=1, bias=False), nn.Conv2d(3, 4, 3, bias=False)
        self.fc = nn.Linear(4 * 2 * 2, 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)
        h = nn.functional.avg_pool2d(F.relu(self.conv2(h)), 1)
        h = h.permute(0, 2, 3, 1).contiguous().view(h.shape[0], -1)
        return self.fc(h)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_loops_in_place_ops_identity_dropout_and_pooling(mode):
    looped = Looped().double().train(mode == "train")
    X = inputs(16, 5)
    rates = infer_rates(looped, X)
    assert all(v == pytest.approx(0.25, abs=1e-12) for v in rates.values())
    assert_exact(looped, rates, X)  # dropout in training mode: one mask per evaluation
    cnn, images = SmallCNN().double().train(mode == "train"), inputs(4, 1, 8, 8)
    rates = infer_rates(cnn, images)
    assert all(v == pytest.approx(1 / 3, abs=1e-12) for v in rates.values())
    assert_exact(cnn, rates, images)


class WithAuxiliaryHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.aux = nn.Linear(6, 10)  # used only by a training recipe, never by forward
        self.body, self.head = nn.Linear(5, 6, bias=False), nn.Linear(6, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.body(x)))


def test_unused_parameters_are_listed_with_rate_zero():
    model, X = WithAuxiliaryHead().double(), inputs(16, 5)
    rates = infer_rates(model, X)
    assert rates.unused == ("aux.weight", "aux.bias")
    assert dict(rates) == pytest.approx({"aux.weight": 0, "aux.bias": 0, "body.weight": 0.5, "head.weight": 0.5})
    assert "unused" in rates.explain(model)
    assert_exact(model, rates, X)
    with pytest.raises(NotQuasiHomogeneousError, match="aux.weight.*never uses"):
        infer_rates(model, X, {"aux.weight": 1.0, "body.weight": 0.5, "head.weight": 0.5})


class GeluMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(5, 8), nn.GELU(), nn.Linear(8, 8), nn.SiLU())
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.net(x))


def test_gelu_network_is_quasi_homogeneous_with_last_layer_rates():
    model, X = GeluMLP().double(), inputs(16, 5)
    rates = infer_rates(model, X)
    assert dict(rates) == {**{n: 0.0 for n, _ in model.net.named_parameters(prefix="net")},
                           "head.weight": 1.0, "head.bias": 1.0}  # fmt: skip
    assert rates.family.dimension == 0
    assert_exact(model, rates, X)


class Attention(nn.Module):
    """Single-head softmax attention written by hand (nanoGPT style, without the causal mask)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).split(x.shape[-1], dim=-1)
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(x.shape[-1]), dim=-1)
        return self.proj(weights @ v)


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block (attention, GELU MLP, residuals), mean-pooled tokens, a linear head."""

    def __init__(self, dim: int = 8, attention: str = "hand") -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.kind = attention
        self.attn = Attention(dim) if attention == "hand" else nn.MultiheadAttention(dim, 2, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.head = nn.Linear(dim, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        x = x + (self.attn(h) if self.kind == "hand" else self.attn(h, h, h, need_weights=False)[0])
        x = x + self.mlp(self.ln2(x))
        return self.head(x.mean(dim=1))


@pytest.mark.parametrize("attention", ["hand", "module"])
def test_transformer_block_has_last_layer_rates(attention):
    # The residual stream starts at the raw tokens (degree 0) and every branch joins it; softmax and GELU need
    # inputs of degree 0 and LayerNorm's ε > 0 fixes its input at degree 0: only the head can scale.
    model, X = TransformerBlock(attention=attention).double(), inputs(4, 5, 8)
    rates = infer_rates(model, X)
    assert rates.top == ("head.weight", "head.bias") and rates.lambda_max == pytest.approx(1.0)
    assert all(v == pytest.approx(0.0, abs=1e-12) for n, v in rates.items() if not n.startswith("head"))
    assert_exact(model, rates, X)


class BasicBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)
        self.conv2, self.bn2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        out += x
        return F.relu(out)


class TinyResNet(nn.Module):
    def __init__(self, channels: int = 4, classes: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.layer1 = nn.Sequential(BasicBlock(channels), BasicBlock(channels))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer1(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_resnet_with_batchnorm_in_both_modes(mode):
    # ε > 0 (and running statistics in eval mode) fix every BatchNorm input at degree 0, so every γ that feeds a
    # later BatchNorm is 0 too: Kunin et al.'s ResNet-18 statement, only the last layer's weight and bias scale.
    model, X = TinyResNet().double().train(mode == "train"), inputs(4, 1, 6, 6)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rates = infer_rates(model, X)
    expected = {n: (1.0 if n.startswith("fc.") else 0.0) for n, _ in model.named_parameters()}
    assert dict(rates) == pytest.approx(expected, abs=1e-12)
    assert_exact(model, rates, X)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # running statistics untouched


def test_float32_model_rates_are_checked_in_float64_and_the_model_is_untouched():
    torch.manual_seed(0)
    layers = [nn.Linear(5, 8, bias=False), nn.ReLU()]
    for _ in range(6):
        layers += [nn.Linear(8, 8, bias=False), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Linear(8, 2, bias=False))
    X = torch.randn(16, 5)
    rates = infer_rates(model, X)
    assert all(v == pytest.approx(1 / 8, abs=1e-12) for v in rates.values())
    assert next(model.parameters()).dtype == torch.float32
    assert_exact(model, rates, X)


class Thresholded(nn.Module):
    """y = s · relu(x) with a data-dependent early exit: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.s = nn.Parameter(torch.tensor(1.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x <= 0).all()):
            return torch.zeros_like(x)
        return self.s * torch.relu(x)


class UsesThresholded(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body, self.act, self.head = nn.Linear(5, 6, bias=False), Thresholded(), nn.Linear(6, 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.body(x)))


def clipped_relu(x: torch.Tensor) -> torch.Tensor:
    """relu, written with a branch on the data (untraceable)."""
    return x.clamp(min=0) if bool(x.numel()) else x


class UsesFunction(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body, self.head = nn.Linear(5, 6, bias=False), nn.Linear(6, 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(clipped_relu(self.body(x)))


def test_a_users_own_leaf_module_and_function_get_declared_rules():
    X = inputs(16, 5)
    model = UsesThresholded().double()
    with pytest.raises(UntraceableModelError, match="register_rule"):
        infer_rates(model, X)
    register_rule(Thresholded, lambda call: call.inputs()[0] + call.parameter("s"))
    rates = infer_rates(model, X)
    # λ_body + λ_s + λ_head = 1 with least norm: ⅓ each.
    assert dict(rates) == pytest.approx({"body.weight": 1 / 3, "act.s": 1 / 3, "head.weight": 1 / 3}, abs=1e-12)
    assert_exact(model, rates, X)
    functional = UsesFunction().double()
    with pytest.raises(UntraceableModelError):
        infer_rates(functional, X)
    register_rule(clipped_relu, "keep")
    rates = infer_rates(functional, X)
    assert dict(rates) == pytest.approx({"body.weight": 0.5, "head.weight": 0.5}, abs=1e-12)
    assert_exact(functional, rates, X)


def test_a_wrong_declared_rule_is_caught_by_the_self_check():
    class Doubler(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * x  # degree 2s, declared (wrongly) as keeping the degree

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body, self.act, self.head = nn.Linear(5, 6, bias=False), Doubler(), nn.Linear(6, 2, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.act(self.body(x)))

    register_rule(Doubler, "keep")
    with pytest.raises(NotQuasiHomogeneousError, match="fail the numerical check"):
        infer_rates(Net().double(), inputs(16, 5))


class Accumulated(nn.Module):
    """out = 0; out += branch(x) for each branch: the zero start joins any degree."""

    def __init__(self) -> None:
        super().__init__()
        self.branches = nn.ModuleList([nn.Linear(5, 3, bias=False) for _ in range(3)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros(x.shape[0], 3)
        for branch in self.branches:
            out = out + branch(x)
        return out * x.std()  # std of the raw input: a constant


def test_an_accumulator_started_at_zero_leaves_the_branches_free():
    model, X = Accumulated().double(), inputs(16, 5)
    rates = infer_rates(model, X)
    assert dict(rates) == pytest.approx({f"branches.{i}.weight": 1.0 for i in range(3)}, abs=1e-12)
    assert_exact(model, rates, X)
