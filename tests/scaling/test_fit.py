"""The power-law fit recovers known parameters from noisy synthetic points."""

import numpy as np
import pytest

from distrec.scaling.fit import INCREASING, fit_power_law, lower_envelope


def test_fit_recovers_decreasing_law():
    rng = np.random.default_rng(0)
    x = np.logspace(5, 9, 12)  # parameters: 100k .. 1B
    a, b, c = 400.0, 0.35, 1.7
    y = (a * x ** -b + c) * np.exp(rng.normal(0, 0.01, x.size))  # 1% multiplicative noise
    fit = fit_power_law(x, y)
    assert fit.b == pytest.approx(b, rel=0.15)
    assert fit.c == pytest.approx(c, rel=0.05)
    assert fit.a == pytest.approx(a, rel=0.6)  # a and b trade off; checked through the curve below
    assert np.allclose(fit(x), a * x ** -b + c, rtol=0.02)
    assert fit.r2 > 0.98
    lo, hi = fit.ci["b"]
    assert lo <= b <= hi and hi - lo < 0.5


def test_fit_recovers_increasing_metric():
    rng = np.random.default_rng(1)
    x = np.logspace(4, 8, 10)
    a, b, c = 2.0, 0.3, 0.08  # NDCG rising towards 0.08
    y = (c - a * x ** -b) * np.exp(rng.normal(0, 0.01, x.size))
    fit = fit_power_law(x, y, direction=INCREASING)
    assert fit.b == pytest.approx(b, rel=0.2)
    assert fit.c == pytest.approx(c, rel=0.1)
    assert np.allclose(fit(x), c - a * x ** -b, rtol=0.05)


def test_pure_power_law_and_too_few_points():
    x = np.array([1e3, 1e4, 1e5, 1e6])
    fit = fit_power_law(x, 5.0 * x ** -0.5)
    assert fit.b == pytest.approx(0.5, abs=0.02) and fit.c == pytest.approx(0.0, abs=1e-3)
    assert fit_power_law([1, 2], [3, 2]) is None
    assert fit_power_law([1, 1, 1, 2], [3, 2, 1, 1]) is None  # two distinct x values only


def test_lower_envelope_is_the_compute_optimal_frontier():
    compute = [1, 2, 3, 4, 5, 6]
    loss = [5.0, 4.0, 4.5, 3.0, 3.5, 2.9]
    assert lower_envelope(compute, loss).tolist() == [0, 1, 3, 5]


def test_auto_direction_follows_the_trend():
    x = np.logspace(4, 6, 6)
    falling = 0.5 * x ** -0.2 + 0.001  # e.g. NDCG over catalog size
    rising = 0.08 - 2.0 * x ** -0.3  # e.g. NDCG over model size
    assert fit_power_law(x, falling, "auto").direction == "decreasing"
    assert fit_power_law(x, rising, "auto").direction == INCREASING


def test_growth_without_a_ceiling_is_a_pure_power_law():
    x = np.logspace(4, 6, 5)
    fit = fit_power_law(x, 1e-4 * x ** 0.3, "auto")  # quality still accelerating: no ceiling in sight
    assert fit.b == pytest.approx(-0.3, abs=0.01) and fit.c == 0.0 and "pure" in fit.note
    assert np.allclose(fit(x), 1e-4 * x ** 0.3, rtol=0.01)
