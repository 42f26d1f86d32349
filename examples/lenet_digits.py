"""LeNet-style CNN on scikit-learn's digits (8x8, 10 classes), trained with pyml's conv and
pooling kernels forward and backward (NumPy for the dense layers, Adam).

Run:  python examples/lenet_digits.py          (about 98% test accuracy in a few seconds)
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from tqdm.auto import tqdm

import pyml
from pyml import nn


def lenet(seed: int = 0, backend: str | None = None) -> nn.Sequential:
    """conv3x3(1->16) relu pool2 -> conv3x3(16->32) relu pool2 -> fc 128->64 relu -> fc 64->10."""
    rng = np.random.default_rng(seed)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, random_state=rng, backend=backend), nn.ReLU(),
        nn.MaxPool2d(2, backend=backend),
        nn.Conv2d(16, 32, 3, padding=1, random_state=rng, backend=backend), nn.ReLU(),
        nn.MaxPool2d(2, backend=backend),
        nn.Flatten(), nn.Linear(128, 64, random_state=rng), nn.ReLU(),
        nn.Linear(64, 10, random_state=rng))


def load(seed: int = 0):
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    return train_test_split(X, y, test_size=0.25, random_state=seed, stratify=y)


def accuracy(net: nn.Module, X: np.ndarray, y: np.ndarray) -> float:
    return float((net.forward(X).argmax(axis=1) == y).mean())


def train(epochs: int = 15, batch_size: int = 32, lr: float = 3e-3, seed: int = 0,
          backend: str | None = None, progress: bool = True) -> float:
    """Train and return the test accuracy."""
    X_tr, X_te, y_tr, y_te = load(seed)
    net = lenet(seed, backend)
    opt = nn.Adam(net, lr=lr)
    rng = np.random.default_rng(seed)
    bar = tqdm(range(epochs), disable=not progress, desc="lenet", unit="epoch")
    for _ in bar:
        order = rng.permutation(len(X_tr))
        for k in range(0, len(order), batch_size):
            b = order[k:k + batch_size]
            net.zero_grad()
            loss, g = nn.softmax_cross_entropy(net.forward(X_tr[b]), y_tr[b])
            net.backward(g)
            opt.step()
        bar.set_postfix(loss=f"{loss:.3f}", test_acc=f"{accuracy(net, X_te, y_te):.3f}")
    return accuracy(net, X_te, y_te)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--backend", default=None)
    # 8x8 images in batches of 32: each layer call is microseconds of work, less than what a
    # parallel region or a BLAS thread hand-off costs, so one thread is fastest here.
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    pyml.set_num_threads(args.threads)
    t0 = time.perf_counter()
    acc = train(args.epochs, backend=args.backend)
    print(f"test accuracy {acc:.4f} in {time.perf_counter() - t0:.1f} s")
