"""pyml.nn layers: gradients against finite differences, and the LeNet demo learns."""
from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import pytest

from pyml import nn


def _net(backend):
    rng = np.random.default_rng(0)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1, dtype=np.float64, random_state=rng, backend=backend), nn.ReLU(),
        nn.MaxPool2d(2, backend=backend),
        nn.Conv2d(3, 4, (2, 1), stride=(1, 2), groups=1, dtype=np.float64, random_state=rng,
                  backend=backend),
        nn.AvgPool2d(2, stride=1, backend=backend), nn.Flatten(),
        nn.Linear(4 * 1 * 1, 5, dtype=np.float64, random_state=rng))


@pytest.mark.parametrize("backend", ["python", "cpp"])
def test_network_gradients_match_finite_differences(backend, rng):
    net = _net(backend)
    x = rng.standard_normal((3, 2, 6, 6))
    y = np.array([0, 3, 4])
    net.zero_grad()
    loss, g = nn.softmax_cross_entropy(net.forward(x), y)
    gx = net.backward(g)
    h = 1e-6
    f = lambda: nn.softmax_cross_entropy(net.forward(x), y)[0]
    for p, gp in list(zip(net.params(), net.grads())) + [(x, gx)]:
        for k in rng.choice(p.size, size=min(p.size, 5), replace=False):
            i = np.unravel_index(k, p.shape)
            old = p[i]
            p[i] = old + h
            up = f()
            p[i] = old - h
            down = f()
            p[i] = old
            assert abs((up - down) / (2 * h) - gp[i]) < 1e-5 * max(1.0, abs(gp[i]))


def test_optimizers_reduce_loss(rng):
    for make in (lambda m: nn.SGD(m, lr=0.05), lambda m: nn.Adam(m, lr=0.01)):
        net = _net("cpp")
        opt = make(net)
        x, y = rng.standard_normal((8, 2, 6, 6)), rng.integers(0, 5, 8)
        first = None
        for _ in range(30):
            net.zero_grad()
            loss, g = nn.softmax_cross_entropy(net.forward(x), y)
            first = loss if first is None else first
            net.backward(g)
            opt.step()
        assert loss < 0.5 * first


def test_lenet_digits_learns():
    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / "lenet_digits.py"
    spec = importlib.util.spec_from_file_location("lenet_digits", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    acc = mod.train(epochs=2, progress=False)
    assert acc > 0.8  # chance is 0.1


def test_backward_before_forward_is_a_clear_error(rng):
    layers = [nn.ReLU(), nn.Flatten(), nn.Linear(3, 2, random_state=0),
              nn.MultiHeadAttention(4, 2, random_state=0)]
    for layer in layers:
        with pytest.raises(ValueError, match=rf"{type(layer).__name__}\.backward\(grad_out\) called before forward"):
            layer.backward(np.ones((2, 3)))


def test_softmax_cross_entropy_checks_labels():
    logits = np.zeros((3, 4))
    for labels, err, msg in ((np.array([0, -1, 2]), ValueError, r"labels must be in \[0, 4\).*-1 at index 1"),
                             (np.array([0, 4, 2]), ValueError, r"labels must be in \[0, 4\)"),
                             (np.array([0.0, 1.0, 2.0]), TypeError, "integer class indices"),
                             (np.array([0, 1]), ValueError, r"shape \(3,\)")):
        with pytest.raises(err, match=msg):
            nn.softmax_cross_entropy(logits, labels)
    with pytest.raises(ValueError, match="logits"):
        nn.softmax_cross_entropy(np.full((3, 4), np.nan), np.array([0, 1, 2]))
    loss, g = nn.softmax_cross_entropy(logits, np.array([0, 1, 3]))
    assert loss == pytest.approx(np.log(4)) and g.shape == (3, 4)


def test_optimizer_hyper_parameters_are_checked():
    net = nn.Linear(3, 2, random_state=0)
    for make, name in ((lambda: nn.SGD(net, lr=np.nan), "lr"), (lambda: nn.SGD(net, lr=0.0), "lr"),
                       (lambda: nn.SGD(net, momentum=1.0), "momentum"), (lambda: nn.Adam(net, lr=-1), "lr"),
                       (lambda: nn.Adam(net, betas=(0.9, 1.0)), r"betas\[1\]"),
                       (lambda: nn.Adam(net, eps=np.inf), "eps")):
        with pytest.raises(ValueError, match=name):
            make()
    with pytest.raises(TypeError, match="module"):
        nn.SGD([net.weight])
    with pytest.raises(TypeError, match="betas"):
        nn.Adam(net, betas=0.9)
