"""Gradient descent from scratch: one neuron learns Celsius → Fahrenheit.

Why this file exists: every model in medlens is trained by the same loop — predict,
measure the error, take the derivative of the error with respect to each weight, step
downhill. Here that loop is written out by hand for the smallest possible "network",
one neuron with a weight and a bias,

    F_hat = w · C + b,

trained on a few (Celsius, Fahrenheit) pairs with the mean squared error

    cost(w, b) = mean((F_hat - F)²),
    ∂cost/∂w   = mean(2 · (F_hat - F) · C),
    ∂cost/∂b   = mean(2 · (F_hat - F)).

No autograd, numpy only. It should find w ≈ 1.8 and b ≈ 32 (the exact rule is
F = 1.8 · C + 32) and predict 50 °C ≈ 122 °F.

Run: ``python examples/gradient_descent_primer.py``
"""

from __future__ import annotations

import numpy as np

CELSIUS = np.array([-40.0, -10.0, 0.0, 8.0, 15.0, 22.0, 38.0], dtype=np.float64)
FAHRENHEIT = np.array([-40.0, 14.0, 32.0, 46.4, 59.0, 71.6, 100.4], dtype=np.float64)


def predict(celsius: np.ndarray | float, w: float, b: float) -> np.ndarray | float:
    """The neuron: a weighted input plus a bias (no activation: the rule is linear)."""
    return w * np.asarray(celsius, dtype=np.float64) + b


def cost(celsius: np.ndarray, fahrenheit: np.ndarray, w: float, b: float) -> float:
    """Mean squared error of the neuron's predictions."""
    err = predict(celsius, w, b) - fahrenheit
    return float(np.mean(err**2))


def gradient(
    celsius: np.ndarray, fahrenheit: np.ndarray, w: float, b: float
) -> tuple[float, float]:
    """Explicit derivatives of :func:`cost` with respect to ``w`` and ``b``."""
    err = predict(celsius, w, b) - fahrenheit
    return float(np.mean(2.0 * err * celsius)), float(np.mean(2.0 * err))


def train(
    celsius: np.ndarray,
    fahrenheit: np.ndarray,
    lr: float = 1e-3,
    steps: int = 6_000,
    *,
    w: float = 0.0,
    b: float = 0.0,
) -> tuple[float, float, list[float]]:
    """Plain (full-batch) gradient descent.

    Args:
        celsius, fahrenheit: training pairs, 1-D arrays of the same length.
        lr: learning rate (step size). Too large and the cost grows every step: with
            inputs spanning -40…38 °C, values above ~1.8e-3 (2 / the largest eigenvalue of
            the cost's Hessian) diverge here.
        steps: number of updates.
        w, b: starting weight and bias.

    Returns:
        ``(w, b, costs)`` with ``costs[i]`` the cost before update ``i`` plus the final cost.
    """
    c = np.asarray(celsius, dtype=np.float64)
    f = np.asarray(fahrenheit, dtype=np.float64)
    if c.shape != f.shape or c.ndim != 1 or c.size == 0:
        raise ValueError(
            f"celsius and fahrenheit must be 1-D of the same length, got {c.shape} and {f.shape}"
        )
    if lr <= 0 or steps < 1:
        raise ValueError(f"lr must be > 0 and steps >= 1, got lr={lr}, steps={steps}")
    costs = []
    for _ in range(int(steps)):
        costs.append(cost(c, f, w, b))
        dw, db = gradient(c, f, w, b)
        w -= lr * dw
        b -= lr * db
    costs.append(cost(c, f, w, b))
    return w, b, costs


def main(every: int = 500) -> None:
    """Train on the table, print the cost curve, the learned rule and a prediction."""
    print("Celsius   :", CELSIUS.tolist())
    print("Fahrenheit:", FAHRENHEIT.tolist())
    w, b, costs = train(CELSIUS, FAHRENHEIT)
    print("\nstep      cost (MSE, °F²)")
    shown = list(range(0, len(costs), every))
    if shown[-1] != len(costs) - 1:
        shown.append(len(costs) - 1)
    for i in shown:
        print(f"{i:>6d}    {costs[i]:14.8g}")
    print(f"\nlearned:  F = {w:.4f} · C + {b:.4f}   (exact: F = 1.8 · C + 32)")
    print(f"50 °C  →  {predict(50.0, w, b):.2f} °F   (exact: 122 °F)")


if __name__ == "__main__":
    main()
