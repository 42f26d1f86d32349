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
