"""Saturating power laws and the compute-optimal frontier.

A loss that falls with scale X (parameters, tokens, FLOPs) follows  y = a * X^-b + c;  a quality
metric that rises towards a ceiling follows  y = c - a * X^-b.  Both are fitted with scipy's
`curve_fit` on log(y) (errors are relative, so small and large values weigh alike), with X divided
by its geometric mean for conditioning and several starting asymptotes tried. Confidence
intervals come from a residual bootstrap (refit on the fitted curve plus resampled log-residuals).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field

import numpy as np

DECREASING, INCREASING = "decreasing", "increasing"


@dataclass
class PowerLawFit:
    a: float  # y = a * X^-b + c (decreasing) or c - a * X^-b (increasing), X in original units
    b: float
    c: float
    direction: str
    n_points: int
    r2: float  # on log(y)
    ci: dict[str, list[float]] = field(default_factory=dict)  # name -> [2.5%, 97.5%]
    note: str = ""

    def __call__(self, x):
        x = np.asarray(x, dtype=float)
        term = self.a * x ** -self.b
        return self.c - term if self.direction == INCREASING else term + self.c

    def formula(self, x_name: str = "X") -> str:
        sign = "-" if self.direction == INCREASING else "+"
        head = f"{self.c:.4g} - " if self.direction == INCREASING else ""
        tail = "" if self.direction == INCREASING else f" {sign} {self.c:.4g}"
        return f"{head}{self.a:.4g} * {x_name}^-{self.b:.3g}{tail}"

    def to_dict(self) -> dict:
        return asdict(self)


def _model(direction):
    def f(u, log_a, b, c):  # u = log(X / X0); a is the scale at X0
        term = np.exp(log_a - b * u)
        y = c - term if direction == INCREASING else term + c
        return np.log(np.maximum(y, 1e-300))
    return f


def _fit_once(u, logy, direction, y, p0=None):
    """Best curve_fit over a few starting points (or from `p0`); returns (params, sse) or None."""
    from scipy.optimize import curve_fit

    f = _model(direction)
    lo, hi = float(y.min()), float(y.max())
    if direction == DECREASING:
        starts, bounds = [0.0, 0.5 * lo, 0.9 * lo], ([-50, 0.0, 0.0], [50, 5.0, lo])
    else:
        starts, bounds = [1.05 * hi, 1.5 * hi, 3 * hi], ([-50, 0.0, hi], [50, 5.0, 100 * hi + 1])
    inits = []
    for c0 in starts:
        gap = np.abs(y - c0) + 1e-12  # |a X^-b| at each point for this asymptote
        slope, intercept = np.polyfit(u, np.log(gap), 1)
        inits.append([intercept, float(np.clip(-slope, 0.01, 4.9)), float(np.clip(c0, bounds[0][2], bounds[1][2]))])
    if p0 is not None:
        inits = [np.clip(p0, bounds[0], bounds[1])]
    best = None
    for p0 in inits:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                params, _ = curve_fit(f, u, logy, p0=p0, bounds=bounds, maxfev=2000)
        except (RuntimeError, ValueError):
            continue
        sse = float(np.sum((f(u, *params) - logy) ** 2))
        if best is None or sse < best[1]:
            best = (params, sse)
    return best


def fit_power_law(x, y, direction: str = DECREASING, n_boot: int = 100, seed: int = 0) -> PowerLawFit | None:
    """Fit a saturating power law to positive (x, y) points; None with fewer than 3 distinct x.
    `direction`: "decreasing", "increasing" or "auto" (from the sign of the log-log trend)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    x, y = x[keep], y[keep]
    if len(np.unique(x)) < 3:
        return None
    if direction == "auto":  # the trend of the points decides: falling -> a X^-b + c, rising -> c - a X^-b
        direction = DECREASING if np.polyfit(np.log(x), np.log(y), 1)[0] < 0 else INCREASING
    x0 = float(np.exp(np.mean(np.log(x))))
    u, logy = np.log(x / x0), np.log(y)
    best = _fit_once(u, logy, direction, y)
    slope, intercept = np.polyfit(u, logy, 1)
    pure_sse = float(np.sum((intercept + slope * u - logy) ** 2))
    if best is None or pure_sse < best[1]:  # growth that keeps accelerating has no ceiling to fit
        return _pure_power_law(u, logy, x0, intercept, -slope, pure_sse, n_boot, seed)
    (log_a, b, c), sse = best
    fitted = _model(direction)(u, log_a, b, c)
    total = float(np.sum((logy - logy.mean()) ** 2))
    r2 = 1.0 - sse / total if total > 0 else 1.0
    a = float(np.exp(log_a) * x0 ** b)  # back to original units: a' (X/X0)^-b = a' X0^b X^-b
    ci = _bootstrap(u, fitted, logy - fitted, direction, x0, n_boot, seed, best[0])
    note = "" if len(x) > 3 else "3 points for 3 parameters: the fit interpolates, intervals are not meaningful"
    return PowerLawFit(a=a, b=float(b), c=float(c), direction=direction, n_points=int(len(x)),
                       r2=float(r2), ci=ci, note=note)


def _pure_power_law(u, logy, x0, log_a, b, sse, n_boot, seed) -> PowerLawFit:
    """y = a X^-b (c = 0; b < 0 for a rising y): a straight line in log-log, bootstrap on its residuals."""
    fitted = log_a - b * u
    rng = np.random.default_rng(seed)
    slopes = [-np.polyfit(u, fitted + rng.choice(logy - fitted, size=len(u)), 1)[0] for _ in range(n_boot)]
    total = float(np.sum((logy - logy.mean()) ** 2))
    return PowerLawFit(a=float(np.exp(log_a) * x0 ** b), b=float(b), c=0.0, direction=DECREASING,
                       n_points=len(u), r2=1.0 - sse / total if total > 0 else 1.0,
                       ci={"b": [float(np.percentile(slopes, 2.5)), float(np.percentile(slopes, 97.5))]},
                       note="pure power law y = a X^-b: no saturation visible in these points")


def _bootstrap(u, fitted, residuals, direction, x0, n_boot, seed, p0):
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n_boot):
        logy = fitted + rng.choice(residuals, size=len(residuals), replace=True)
        best = _fit_once(u, logy, direction, np.exp(logy), p0=p0)
        if best is not None:
            log_a, b, c = best[0]
            samples.append((np.exp(log_a) * x0 ** b, b, c))
    if len(samples) < 10:
        return {}
    samples = np.array(samples)
    return {name: [float(np.percentile(samples[:, i], 2.5)), float(np.percentile(samples[:, i], 97.5))]
            for i, name in enumerate(("a", "b", "c"))}


def lower_envelope(x, y) -> np.ndarray:
    """Indices of the points on the lower envelope of y over x (the compute-optimal frontier):
    sorted by x, a point is kept when no cheaper point reached a lower y."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    order = np.lexsort((y, x))
    keep, best = [], np.inf
    for i in order:
        if np.isfinite(y[i]) and y[i] < best:
            keep.append(i)
            best = y[i]
    return np.array(keep, dtype=int)
