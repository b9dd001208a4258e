"""Calibrated building confidence: the probability that an extracted building is a true positive.

Each extracted building gets ``confidence``. Without a calibration that is the mean body
probability of its pixels, which says how sure the network was about the pixels, not how often
such a building is right: the default model's buildings with a mean of 0.9 are true positives
(SpaceNet rule, IoU > 0.5 with a labelled building) far less often than 90 % of the time.

A :class:`Calibration` maps per-building features to that probability. It is a logistic
regression on the logit of the mean body probability and the log of the area (m²), optionally
followed by an isotonic (monotone, piecewise-linear) map of the logistic's output; everything
is a handful of JSON numbers stored in the model's metadata (``ModelMetadata.calibration``).
:func:`fit_calibration` fits one from buildings whose outcome (true positive or not) is known;
:func:`reliability` and :func:`expected_calibration_error` say how well confidences match the
observed rate of true positives (10 equal-width bins, weighted by count).

numpy only: no scikit-learn in the backend's dependencies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field, field_validator, model_validator

__all__ = [
    "FEATURES",
    "Calibration",
    "ReliabilityBin",
    "building_features",
    "fit_calibration",
    "reliability",
    "expected_calibration_error",
]

FeatureName = Literal["logit_mean_body", "log_area_m2"]
#: The features a calibration may use, in this order.
FEATURES: tuple[str, ...] = ("logit_mean_body", "log_area_m2")
#: Bins of the reliability diagram and the ECE.
BINS = 10
#: Probabilities are clipped to [EPS, 1 - EPS] before the logit; areas below MIN_AREA_M2.
_EPS = 1e-4
_MIN_AREA_M2 = 0.1


def building_features(
    mean_body: Sequence[float] | np.ndarray,
    area_m2: Sequence[float] | np.ndarray,
    names: Sequence[str] = FEATURES,
) -> np.ndarray:
    """The feature matrix (n x len(names)) of buildings with these mean body probabilities
    and areas (square metres)."""
    p = np.clip(np.asarray(mean_body, dtype=np.float64), _EPS, 1 - _EPS)
    area = np.maximum(np.asarray(area_m2, dtype=np.float64), _MIN_AREA_M2)
    columns = {"logit_mean_body": np.log(p / (1 - p)), "log_area_m2": np.log(area)}
    return np.column_stack([columns[name] for name in names]) if len(p) else np.zeros((0, 0))


class ReliabilityBin(BaseModel):
    """One bin of a reliability diagram: confidences in [low, high)."""

    low: float
    high: float
    count: int
    mean_confidence: float | None
    tp_rate: float | None


class Calibration(BaseModel):
    """Per-building features -> probability of a true positive (see the module docstring).

    ``p = sigmoid(intercept + sum(coefficients * features))``, then, when ``isotonic_x`` is
    given, ``p = interp(p, isotonic_x, isotonic_y)``. ``fitted_on`` and the ECE figures say
    where it was fitted and measured (informative only).
    """

    method: Literal["logistic", "logistic+isotonic"] = "logistic"
    features: list[FeatureName] = Field(default_factory=lambda: list(FEATURES))
    coefficients: list[float]
    intercept: float
    isotonic_x: list[float] | None = None
    isotonic_y: list[float] | None = None
    #: What it was fitted on (areas, buildings) and the ECE there before / after.
    fitted_on: str = ""
    buildings: int = Field(0, ge=0)
    ece_before: float | None = None
    ece_after: float | None = None

    @field_validator("coefficients")
    @classmethod
    def _finite(cls, value: list[float]) -> list[float]:
        if not all(math.isfinite(v) for v in value):
            raise ValueError(f"every coefficient must be a finite number, got {value}")
        return value

    @model_validator(mode="after")
    def _shapes(self) -> Calibration:
        if len(self.coefficients) != len(self.features):
            raise ValueError(
                f"{len(self.features)} features need as many coefficients, got "
                f"{len(self.coefficients)}"
            )
        if (self.isotonic_x is None) != (self.isotonic_y is None):
            raise ValueError("isotonic_x and isotonic_y go together")
        if self.isotonic_x is not None:
            x, y = np.asarray(self.isotonic_x), np.asarray(self.isotonic_y)
            if len(x) != len(y) or len(x) < 2:
                raise ValueError("the isotonic map needs at least two points, as many x as y")
            if np.any(np.diff(x) < 0) or np.any(np.diff(y) < 0):
                raise ValueError("the isotonic map must be non-decreasing in x and y")
            if x.min() < 0 or x.max() > 1 or y.min() < 0 or y.max() > 1:
                raise ValueError("the isotonic map's points must lie in [0, 1]")
        return self

    def apply(
        self, mean_body: Sequence[float] | np.ndarray, area_m2: Sequence[float] | np.ndarray
    ) -> np.ndarray:
        """The calibrated confidence of buildings with these mean body probabilities and areas."""
        if len(mean_body) == 0:
            return np.zeros(0)
        x = building_features(mean_body, area_m2, self.features)
        p = _sigmoid(self.intercept + x @ np.asarray(self.coefficients, dtype=np.float64))
        if self.isotonic_x is not None:
            p = np.interp(p, self.isotonic_x, self.isotonic_y)
        return np.clip(p, 0.0, 1.0)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free


def _logistic(x: np.ndarray, y: np.ndarray, ridge: float, iterations: int = 50) -> np.ndarray:
    """Weights (intercept first) of a logistic regression of ``y`` on standardised ``x`` by
    Newton's method with an L2 penalty ``ridge`` on the slopes."""
    design = np.column_stack([np.ones(len(x)), x])
    w = np.zeros(design.shape[1])
    w[0] = math.log((y.mean() + 1e-3) / (1 - y.mean() + 1e-3))
    penalty = np.full(design.shape[1], ridge)
    penalty[0] = 0.0
    for _ in range(iterations):
        p = _sigmoid(design @ w)
        grad = design.T @ (p - y) + penalty * w
        hess = (design * (p * (1 - p))[:, None]).T @ design + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return w


def _isotonic(x: np.ndarray, y: np.ndarray, max_points: int = 40) -> tuple[list, list]:
    """A non-decreasing piecewise-linear map fitted to (x, y) by pool-adjacent-violators,
    its knots at the centres of the pooled blocks (at most ``max_points``, ends at 0 and 1)."""
    order = np.argsort(x, kind="stable")
    xs, ys = x[order], y[order].astype(np.float64)
    # blocks: [sum_y, count, sum_x]
    blocks: list[list[float]] = []
    for xi, yi in zip(xs, ys, strict=True):
        blocks.append([yi, 1.0, xi])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] >= blocks[-1][0] / blocks[-1][1]:
            s, n, sx = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += n
            blocks[-1][2] += sx
    knots_x = np.array([b[2] / b[1] for b in blocks])
    knots_y = np.array([b[0] / b[1] for b in blocks])
    if len(knots_x) > max_points:
        keep = np.unique(np.linspace(0, len(knots_x) - 1, max_points).round().astype(int))
        knots_x, knots_y = knots_x[keep], knots_y[keep]
    knots_x = np.concatenate([[0.0], knots_x, [1.0]])
    knots_y = np.concatenate([[knots_y[0]], knots_y, [knots_y[-1]]])
    knots_x = np.maximum.accumulate(np.clip(knots_x, 0, 1))
    return [round(float(v), 6) for v in knots_x], [round(float(v), 6) for v in knots_y]


def fit_calibration(
    mean_body: Sequence[float] | np.ndarray,
    area_m2: Sequence[float] | np.ndarray,
    true_positive: Sequence[bool] | np.ndarray,
    features: Sequence[str] = FEATURES,
    isotonic: bool = False,
    ridge: float = 1.0,
    fitted_on: str = "",
) -> Calibration:
    """A calibration fitted to buildings with known outcomes.

    ``isotonic`` adds a monotone map of the logistic's output (needs a few hundred buildings;
    with fewer the logistic alone is steadier). Raises ``ValueError`` when the outcomes are all
    alike (nothing to learn from).
    """
    y = np.asarray(true_positive, dtype=np.float64)
    if len(y) == 0 or y.min() == y.max():
        raise ValueError(
            f"calibration needs both true and false positives, got {int(y.sum())} true of "
            f"{len(y)} buildings"
        )
    x = building_features(mean_body, area_m2, features)
    mean, std = x.mean(axis=0), x.std(axis=0)
    std[std < 1e-9] = 1.0
    w = _logistic((x - mean) / std, y, ridge)
    slopes = w[1:] / std
    intercept = w[0] - float(np.sum(slopes * mean))
    calibration = Calibration(
        method="logistic",
        features=list(features),
        coefficients=[round(float(v), 6) for v in slopes],
        intercept=round(float(intercept), 6),
        fitted_on=fitted_on,
        buildings=len(y),
    )
    if isotonic:
        p = calibration.apply(mean_body, area_m2)
        knots_x, knots_y = _isotonic(p, y)
        calibration = calibration.model_copy(
            update={"method": "logistic+isotonic", "isotonic_x": knots_x, "isotonic_y": knots_y}
        )
    before = expected_calibration_error(np.asarray(mean_body, dtype=np.float64), y)
    after = expected_calibration_error(calibration.apply(mean_body, area_m2), y)
    return calibration.model_copy(
        update={"ece_before": round(before, 4), "ece_after": round(after, 4)}
    )


def reliability(
    confidence: Sequence[float] | np.ndarray,
    true_positive: Sequence[bool] | np.ndarray,
    bins: int = BINS,
) -> list[ReliabilityBin]:
    """The reliability diagram: per equal-width confidence bin (the last one includes 1), how
    many buildings, their mean confidence and their observed rate of true positives."""
    conf = np.asarray(confidence, dtype=np.float64)
    y = np.asarray(true_positive, dtype=np.float64)
    index = np.clip((conf * bins).astype(int), 0, bins - 1)
    result = []
    for b in range(bins):
        inside = index == b
        n = int(inside.sum())
        result.append(
            ReliabilityBin(
                low=b / bins,
                high=(b + 1) / bins,
                count=n,
                mean_confidence=round(float(conf[inside].mean()), 4) if n else None,
                tp_rate=round(float(y[inside].mean()), 4) if n else None,
            )
        )
    return result


def expected_calibration_error(
    confidence: Sequence[float] | np.ndarray,
    true_positive: Sequence[bool] | np.ndarray,
    bins: int = BINS,
) -> float:
    """ECE: the count-weighted mean over equal-width bins of |mean confidence - TP rate|
    (0 for no buildings)."""
    table = reliability(confidence, true_positive, bins)
    total = sum(b.count for b in table)
    if total == 0:
        return 0.0
    return float(
        sum(b.count * abs(b.mean_confidence - b.tp_rate) for b in table if b.count) / total
    )
