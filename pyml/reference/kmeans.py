"""k-means / k-medians reference: plain Python loops that mirror the textbook equations.

- k-means (Lloyd 1982; MacQueen 1967): J = sum_i sum_{x_j in C_i} ||x_j - mu_i||^2, minimised
  alternately over the assignments and the centres mu_i (the weighted means).
- k-medians (Bradley, Mangasarian & Street 1997): sum |x_j - m_i|_1 with the coordinate-wise
  median as the centre.
- k-means++ (Arthur & Vassilvitskii 2007): the next centre is drawn with probability
  proportional to D(x)^2, the squared distance to the nearest centre chosen so far; the greedy
  variant (their section 5, scikit-learn's default) draws several candidates per step and
  keeps the one that lowers the potential sum D^2 the most.

This module is the oracle of the tests; it never imports a kernel or the backend registry.
Every function has the same signature as its compiled kernels (pyml/_kmeans_driver.py).
"""
from __future__ import annotations

import math

import numpy as np


def kmeans_assign(X: np.ndarray, C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """c(x_j) = argmin_i ||x_j - mu_i||^2 and that squared distance (the assignment step of J)."""
    n, d = X.shape
    k = C.shape[0]
    labels = np.zeros(n, np.int32)
    dist = np.zeros(n, X.dtype)
    for j in range(n):
        best, best_i = math.inf, 0
        for i in range(k):
            s = 0.0
            for t in range(d):
                diff = float(X[j, t]) - float(C[i, t])
                s += diff * diff
            if s < best:  # strict: the smallest index wins a tie
                best, best_i = s, i
        labels[j], dist[j] = best_i, best
    return labels, dist


def kmedians_assign(X: np.ndarray, C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """c(x_j) = argmin_i ||x_j - m_i||_1 and that L1 distance (k-medians)."""
    n, d = X.shape
    k = C.shape[0]
    labels = np.zeros(n, np.int32)
    dist = np.zeros(n, X.dtype)
    for j in range(n):
        best, best_i = math.inf, 0
        for i in range(k):
            s = 0.0
            for t in range(d):
                s += abs(float(X[j, t]) - float(C[i, t]))
            if s < best:
                best, best_i = s, i
        labels[j], dist[j] = best_i, best
    return labels, dist


def relocate_empty(w: np.ndarray, labels: np.ndarray, dist: np.ndarray, k: int) -> np.ndarray:
    """Labels after moving, for every cluster of zero total weight (ascending index), the
    positive-weight point farthest from its centre (ties: smallest index) into it.

    This is the empty-cluster rule of the Lloyd update shared by every backend.
    """
    n = labels.shape[0]
    W = [0.0] * k
    for j in range(n):
        W[labels[j]] += float(w[j])
    new = labels.copy()
    prev_d, prev_j = math.inf, -1  # picks go down the order (dist desc, index asc)
    for i in range(k):
        if W[i] != 0.0:
            continue
        best_d, best_j = -math.inf, -1
        for j in range(n):
            dj = float(dist[j])
            after_prev = dj < prev_d or (dj == prev_d and j > prev_j)
            if w[j] > 0.0 and after_prev and dj > best_d:
                best_d, best_j = dj, j
        if best_j < 0:  # fewer positive-weight points than clusters: leave it empty
            break
        new[best_j] = i
        prev_d, prev_j = best_d, best_j
    return new


def kmeans_update(X: np.ndarray, w: np.ndarray, labels: np.ndarray, dist: np.ndarray,
                  C: np.ndarray) -> np.ndarray:
    """mu_i = sum_{x_j in C_i} w_j x_j / sum_{x_j in C_i} w_j, the minimiser of J for fixed
    assignments; a cluster left with zero weight keeps its old centre."""
    n, d = X.shape
    k = C.shape[0]
    lab = relocate_empty(w, labels, dist, k)
    S = [[0.0] * d for _ in range(k)]
    W = [0.0] * k
    for j in range(n):
        i = lab[j]
        W[i] += float(w[j])
        for t in range(d):
            S[i][t] += float(w[j]) * float(X[j, t])
    mu = C.copy()
    for i in range(k):
        if W[i] > 0.0:
            for t in range(d):
                mu[i, t] = S[i][t] / W[i]
    return mu


def weighted_median(values: list[float], weights: list[float]) -> float:
    """The smallest v with sum of the weights of values <= v at least half the total."""
    order = sorted(range(len(values)), key=lambda j: values[j])
    half = 0.5 * sum(weights)
    acc = 0.0
    for j in order:
        acc += weights[j]
        if acc >= half:
            return values[j]
    return values[order[-1]]


def kmedians_update(X: np.ndarray, w: np.ndarray, labels: np.ndarray, dist: np.ndarray,
                    C: np.ndarray) -> np.ndarray:
    """m_i[t] = weighted median of {x_j[t] : x_j in C_i} (k-medians), per coordinate t."""
    n, d = X.shape
    k = C.shape[0]
    lab = relocate_empty(w, labels, dist, k)
    m = C.copy()
    for i in range(k):
        members = [j for j in range(n) if lab[j] == i]
        weights = [float(w[j]) for j in members]
        if not members or sum(weights) <= 0.0:
            continue
        for t in range(d):
            m[i, t] = weighted_median([float(X[j, t]) for j in members], weights)
    return m


def kmeans_plusplus_step(X: np.ndarray, w: np.ndarray, D2: np.ndarray,
                         candidates: np.ndarray) -> tuple[int, float, np.ndarray]:
    """One greedy k-means++ step: for every candidate c the potential
    phi(c) = sum_j w_j min(D2_j, ||x_j - x_c||^2); returns the first candidate of lowest phi
    (its position in ``candidates``), phi of it and the new D2 = min(D2, ||x - x_best||^2)."""
    n, d = X.shape
    pots = []
    for c in candidates:
        phi = 0.0
        for j in range(n):
            s = 0.0
            for t in range(d):
                diff = float(X[j, t]) - float(X[c, t])
                s += diff * diff
            phi += float(w[j]) * min(float(D2[j]), s)
        pots.append(phi)
    best = min(range(len(pots)), key=lambda q: (pots[q], q))
    c = candidates[best]
    new = np.empty(n, np.float64)
    for j in range(n):
        s = 0.0
        for t in range(d):
            diff = float(X[j, t]) - float(X[c, t])
            s += diff * diff
        new[j] = min(float(D2[j]), s)
    return best, pots[best], new


def kmeans_plusplus(X: np.ndarray, n_clusters: int, w: np.ndarray, rng: np.random.Generator,
                    n_local_trials: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): the first centre drawn with
    probability w_j / sum w, each next one from ``n_local_trials`` candidates drawn with
    probability w_j D(x_j)^2 / sum_l w_l D(x_l)^2, keeping the candidate of lowest potential
    (n_local_trials=1: the plain algorithm of the paper).

    Each draw is one uniform inverted through the cumulative weights (the first index whose
    cumulative weight exceeds it), so pyml.kmeans.kmeans_plusplus makes the same picks from
    the same generator.
    """
    n = X.shape[0]
    w = [float(v) for v in w]

    def draw(p: list[float], u: float) -> int:
        acc = 0.0
        for j in range(n):
            acc += p[j]
            if u < acc:
                return j
        return n - 1

    total_w = 0.0
    for v in w:
        total_w += v
    indices = [draw(w, rng.random() * total_w)]
    D2 = np.full(n, np.inf)
    _, _, D2 = kmeans_plusplus_step(X, np.asarray(w), D2, np.array(indices))
    for _ in range(1, n_clusters):
        p = [w[j] * float(D2[j]) for j in range(n)]
        total = 0.0
        for v in p:
            total += v
        if not total > 0.0:  # every point already chosen (duplicates): fall back to weights
            p, total = w, total_w
        us = rng.random(n_local_trials) * total
        cand = np.array([draw(p, float(u)) for u in us], np.int64)
        best, _, D2 = kmeans_plusplus_step(X, np.asarray(w), D2, cand)
        indices.append(int(cand[best]))
    idx = np.array(indices, np.int64)
    return X[idx].copy(), idx
