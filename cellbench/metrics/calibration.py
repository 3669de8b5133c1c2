"""Calibration: expected calibration error and temperature scaling (Guo et al., 2017).

The temperature is the one scalar T > 0 that minimises the negative log-likelihood of
``softmax(logits / T)`` on held-out data (the validation fold, never the test one). It changes
confidence, not the ranking, so accuracy is untouched. Fitted with scipy's bounded scalar
minimiser on log T: one parameter needs no optimiser of our own.
"""

from __future__ import annotations

import numpy as np

DEFAULT_BINS = 15


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z_max = z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z - z_max).sum(axis=1)) + z_max[:, 0]
    return float(np.mean(log_norm - z[np.arange(len(labels)), labels]))


def expected_calibration_error(
    probs: np.ndarray, labels: np.ndarray, bins: int = DEFAULT_BINS
) -> float:
    """Sum over equal-width confidence bins of |accuracy - confidence| weighted by the bin's
    share of the samples."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if not len(labels):
        return float("nan")
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    conf_sum = np.bincount(which, weights=confidence, minlength=bins)
    acc_sum = np.bincount(which, weights=correct, minlength=bins)
    return float(np.abs(acc_sum - conf_sum).sum() / len(labels))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T in [0.05, 20] minimising the NLL of ``softmax(logits / T)``."""
    from scipy.optimize import minimize_scalar

    labels = np.asarray(labels)
    if not len(labels):
        return 1.0
    result = minimize_scalar(
        lambda log_t: nll(logits, labels, float(np.exp(log_t))),
        bounds=(np.log(0.05), np.log(20.0)),
        method="bounded",
    )
    return float(np.exp(result.x))
