"""The collapse probe reads the features of the evaluation pass: no forward pass of its own, the same numbers."""

import numpy as np
import pytest
import torch

from implicit_bias.data import load
from implicit_bias.models import build
from implicit_bias.train import fit
from implicit_bias.train.probes import CollapseProbe


def nc1_numpy(H, y, K):
    """tr(Σ_W Σ_B^†)/K (Papyan, Han & Donoho 2020), in numpy float64."""
    means = np.stack([H[y == c].mean(axis=0) for c in range(K)])
    M = (means - means.mean(axis=0)).T
    within = H - means[y]
    sigma_w, sigma_b = within.T @ within / len(y), M @ M.T / K
    return np.trace(sigma_w @ np.linalg.pinv(sigma_b, rcond=1e-10)) / K


def run(eval_batch_size):
    data = load("gaussians", num_classes=3, dim=4, n_per_class=20, seed=5)
    model = build("mlp:depth=3,width=10", data.input_shape, 3, seed=0)
    full_passes = []
    model.register_forward_hook(lambda _m, args, _o: full_passes.append(len(args[0])) if len(args[0]) == 60 else None)
    history = fit(model, data, steps=12, lr=0.1, batch_size=16, log_points=4, probes=[CollapseProbe()],
                  eval_batch_size=eval_batch_size, progress=False)  # fmt: skip
    return data, model, history, len(full_passes)


def test_the_collapse_probe_reuses_the_evaluation_pass_and_matches_a_brute_force():
    data, model, history, passes = run(None)
    assert passes == len(history.rows)  # one full forward per logged row: the evaluation, nothing more
    with torch.no_grad():
        model.eval()
        h1 = model.layer1(model.flatten(data.X.to(model.head.weight.dtype)))
        h2 = model.layer2(h1)
    y = data.y.numpy()
    assert history.last["nc1/layer1"] == pytest.approx(nc1_numpy(h1.double().numpy(), y, 3), rel=1e-9)
    assert history.last["nc1/layer2"] == pytest.approx(nc1_numpy(h2.double().numpy(), y, 3), rel=1e-9)
    W = model.head.weight.detach().double().numpy()  # NC3 at the classifier's input: ‖W/‖W‖ − M̃/‖M̃‖‖²
    means = np.stack([h2.double().numpy()[y == c].mean(axis=0) for c in range(3)])
    centred = means - means.mean(axis=0)
    expected = np.square(W / np.linalg.norm(W) - centred / np.linalg.norm(centred)).sum()
    assert history.last["self_duality/layer2"] == pytest.approx(expected, rel=1e-9)


def test_with_an_eval_batch_size_the_probe_streams_its_own_passes_to_the_same_numbers():
    _, _, reused, _ = run(None)
    _, _, streamed, passes = run(32)
    assert passes == 0  # every forward pass saw at most 32 samples
    for key, value in reused.last.items():
        if "/" in key:
            assert streamed.last[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
