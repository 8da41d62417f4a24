"""Temporal smoothing of each track's probabilities, so labels do not flicker from frame to frame.

An exponential moving average with a time constant rather than a per-frame weight: the same
``smooth_s`` means the same thing at 30 fps, at --sample-fps 5, and for a webcam that delivers
frames irregularly (static/tracking.js applies the same formula). After a step change of
expression the smoothed probabilities cover 63% of the step in ``smooth_s`` seconds and 95% in
three times that.
"""

from __future__ import annotations

import math

import numpy as np

# Half a second: a real change of expression still shows within about a second (95% in 1.5 s),
# while frame-to-frame noise is averaged over about 15 frames at 30 fps. On a face holding one
# expression whose top two classes are 5 points apart with noise of 8 points per frame (as in
# tests/test_video.py) the raw label changed 72 times in 150 frames and the smoothed one
# twice. (The two-people test clip, two steady smiles, flips in neither case.)
DEFAULT_SMOOTH_S = 0.5
# A track seen again after this long starts its smoothing afresh (the face may have changed).
DEFAULT_FORGET_AFTER_S = 2.0


def ema_weight(dt_s: float, smooth_s: float) -> float:
    """Weight of the new observation after ``dt_s`` seconds: 1 - exp(-dt / tau)."""
    if smooth_s <= 0:
        return 1.0
    return 1.0 - math.exp(-max(dt_s, 0.0) / smooth_s)


class ProbabilitySmoother:
    """Per track id: smoothed probability vector and the time it was last updated."""

    def __init__(self, smooth_s: float = DEFAULT_SMOOTH_S, forget_after_s: float = DEFAULT_FORGET_AFTER_S) -> None:
        if smooth_s < 0:
            raise ValueError(f"smoothing must be 0 (off) or a positive number of seconds, not {smooth_s}")
        self.smooth_s = float(smooth_s)
        self.forget_after_s = forget_after_s
        self._state: dict[int, tuple[float, np.ndarray]] = {}

    def update(self, track_id: int | None, time_s: float, probs: np.ndarray) -> np.ndarray:
        """The smoothed probabilities of ``track_id`` at ``time_s`` given this frame's ``probs``."""
        probs = np.asarray(probs, dtype=np.float64)
        if track_id is None or self.smooth_s == 0:
            return probs
        previous = self._state.get(track_id)
        if previous is None or time_s - previous[0] > self.forget_after_s:
            smoothed = probs  # a new (or long-lost) face starts from what is seen now
        else:
            weight = ema_weight(time_s - previous[0], self.smooth_s)
            smoothed = previous[1] + weight * (probs - previous[1])
        self._state[track_id] = (time_s, smoothed)
        return smoothed
