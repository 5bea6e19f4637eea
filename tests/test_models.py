"""Model shapes, feature names, specs and homogeneity."""

import pytest
import torch

from implicit_bias.errors import InvalidArgumentError, NotHomogeneousError, UnknownNameError
from implicit_bias.metrics import homogeneity_degree
from implicit_bias.models import build, capture_features, feature_names, format_spec, parse_spec

CASES = [
    ("linear", (10,), 2, (1,), {}),
    ("mlp:depth=3,width=16", (1, 8, 8), 10, (10,), {"layer1": (16,), "layer2": (16,)}),
    ("mlp:depth=2,width=8,norm=batchnorm,activation=leaky_relu", (5,), 3, (3,), {"layer1": (8,)}),
    ("mlp:depth=2,width=8,norm=layernorm,activation=identity", (5,), 3, (3,), {"layer1": (8,)}),
    ("cnn", (1, 28, 28), 10, (10,), {"block1": (32, 12, 12), "block2": (64, 5, 5), "fc1": (1024,)}),
    (
        "cnn:padding=same,channels=[4,8],hidden=16",
        (1, 8, 8),
        10,
        (10,),
        {"block1": (4, 4, 4), "block2": (8, 2, 2), "fc1": (16,)},
    ),
    (
        "cnn:padding=same,channels=[4,8],hidden=16",
        (40,),
        10,
        (10,),
        {"block1": (4, 20), "block2": (8, 10), "fc1": (16,)},
    ),
    (
        "resnet:width=4",
        (3, 16, 16),
        10,
        (10,),
        {
            "stem": (4, 16, 16),
            "stage1": (4, 16, 16),
            "stage2": (8, 8, 8),
            "stage3": (16, 4, 4),
            "flatten": (16,),
        },
    ),
    (
        "resnet:width=4,norm=none,stages=2",
        (40,),
        4,
        (4,),
        {"stem": (4, 40), "stage1": (4, 40), "stage2": (8, 20), "flatten": (8,)},
    ),
    (
        "resnet:width=8,norm=groupnorm,stages=1,blocks=2",
        (2, 6, 6),
        3,
        (3,),
        {"stem": (8, 6, 6), "stage1": (8, 6, 6), "flatten": (8,)},
    ),
]


@pytest.mark.parametrize("spec,shape,classes,out,features", CASES)
def test_shapes_and_feature_names(spec, shape, classes, out, features):
    model = build(spec, shape, classes, seed=0)
    outputs, captured = capture_features(model, torch.randn(3, *shape))
    assert outputs.shape == (3, *out)
    assert tuple(captured) == feature_names(model) == tuple(features)
    for name, expected in features.items():
        assert captured[name].shape == (3, *expected)


def test_any_named_module_is_reachable():
    model = build("mlp:depth=3,width=8", (4,), 3, seed=0)
    _, captured = capture_features(model, torch.randn(2, 4), layers=["layer2.0", "head"])
    assert captured["layer2.0"].shape == (2, 8) and captured["head"].shape == (2, 3)
    with pytest.raises(InvalidArgumentError, match="no layer"):
        capture_features(model, torch.randn(2, 4), layers=["layer9"])


def test_seed_fixes_initialization_without_touching_the_global_rng():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = build("mlp", (4,), 3, seed=7)
    b = build("mlp", (4,), 3, seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_init_scale_multiplies_every_parameter():
    a = build("mlp:width=8", (4,), 3, seed=1)
    b = build({"name": "mlp", "width": 8, "init_scale": 0.1}, (4,), 3, seed=1)
    assert all(torch.allclose(q, 0.1 * p) for p, q in zip(a.parameters(), b.parameters()))


def test_binary_data_gets_a_single_output_unless_asked():
    assert build("mlp", (4,), 2)(torch.randn(3, 4)).shape == (3, 1)
    assert build("mlp:outputs=2", (4,), 2)(torch.randn(3, 4)).shape == (3, 2)


@pytest.mark.parametrize(
    "spec,shape,degree",
    [
        ("linear:bias=false", (6,), 1),
        ("mlp:depth=3,width=12,bias=false", (6,), 3),
        ("mlp:depth=4,width=12,bias=false,activation=leaky_relu", (6,), 4),
        ("mlp:depth=2,width=12,bias=false,activation=identity", (6,), 2),
        ("cnn:bias=false,padding=same,channels=[4,8],hidden=16", (1, 8, 8), 4),
    ],
)
def test_bias_free_networks_are_homogeneous_of_their_depth(spec, shape, degree):
    model = build(spec, shape, 3, seed=0).double()
    assert homogeneity_degree(model, torch.randn(9, *shape, dtype=torch.float64)) == degree


@pytest.mark.parametrize("spec", ["mlp:depth=2,width=12", "resnet:width=4,norm=none,stages=1"])
def test_networks_with_biases_are_not_homogeneous(spec):
    shape = (6,) if spec.startswith("mlp") else (2, 6, 6)
    model = build(spec, shape, 3, seed=0).double()
    with pytest.raises(NotHomogeneousError, match="quasi-homogeneous"):
        homogeneity_degree(model, torch.randn(9, *shape, dtype=torch.float64))


def test_spec_parsing_round_trips():
    name, options = parse_spec("cnn:channels=[8, 16],padding=same,bias=false,hidden=1e3")
    assert name == "cnn" and options == {
        "channels": [8, 16],
        "padding": "same",
        "bias": False,
        "hidden": 1000.0,
    }
    assert parse_spec(format_spec(name, options)) == (name, options)


def test_bad_specs_are_refused_with_the_allowed_options():
    with pytest.raises(UnknownNameError, match="unknown model 'transformer'"):
        build("transformer", (4,), 3)
    with pytest.raises(UnknownNameError, match="'widht'.*allowed: .*width"):
        build("mlp:widht=3", (4,), 3)
    with pytest.raises(InvalidArgumentError, match="key=value"):
        build("mlp:depth", (4,), 3)
    with pytest.raises(InvalidArgumentError, match="too small for the cnn"):
        build("cnn", (1, 8, 8), 10)
    with pytest.raises(
        UnknownNameError, match=r"activation must be 'relu' \| 'leaky_relu' \| 'identity', got str 'tanh'"
    ):
        build("mlp:activation=tanh", (4,), 3)


def _bias_count(model):
    return sum(module.bias is not None for module in model.modules() if isinstance(module, torch.nn.Linear))


@pytest.mark.parametrize("value,biases", [("false", 0), ("0", 0), ("true", 2), ("1", 2)])
def test_bool_options_take_true_false_1_0(value, biases):
    assert _bias_count(build(f"mlp:depth=2,width=3,bias={value}", (4,), 3)) == biases  # two Linear layers


@pytest.mark.parametrize(
    "spec,fragment",
    [
        ("mlp:bias=flase", "option bias must be bool (true or false), got str 'flase'"),  # was built with biases
        ("mlp:bias=2", "option bias must be bool (true or false), got int 2"),
        ({"name": "mlp", "bias": "false"}, "got str 'false'"),
        ("mlp:width=2.5", "option width must be int, got float 2.5"),
        ("mlp:depth=true", "option depth must be int, got bool True"),
        ("mlp:negative_slope=small", "option negative_slope must be float, got str 'small'"),
        ("mlp:init_scale=nan", "option init_scale must be float, got float nan"),
        ("cnn:channels=[4, x]", r"option channels must be tuple[int, int] | list[int], got list [4, 'x']"),
        ("resnet:norm=group", "option norm must be 'none' | 'batchnorm' | 'layernorm' | 'groupnorm'"),
        ("cnn:padding=full", "option padding must be 'valid' | 'same', got str 'full'"),
    ],
)
def test_option_types_are_checked_against_the_builders_annotations(spec, fragment):
    with pytest.raises(InvalidArgumentError) as caught:
        build(spec, (1, 8, 8), 3)
    message = str(caught.value)
    assert fragment in message and "\n" not in message
    assert "allowed: " in message and "outputs: int, init_scale: float" in message  # every option with its type


def test_whole_numbers_and_ints_convert_exactly():
    model = build("mlp:depth=2,width=1e1,negative_slope=0,activation=leaky_relu", (4,), 3)
    assert model.layer1[0].out_features == 10 and model.layer1[1].negative_slope == 0.0
    assert isinstance(model.layer1[1].negative_slope, float)
