"""Surprise: how far System-2's foresight missed the frame that actually arrived; no rclpy.

An intent stamped ``t`` (the stamp of the observation it was computed from) predicts the
frozen-ViT tokens of the frame ``horizon`` control periods later, ``t + horizon * period``.
When the observation with that stamp arrives (within ``tolerance_s``), :func:`score`
compares the two:

* ``mse``: mean squared error between foresight and the tokens seen;
* ``copy_mse``: the same error of "nothing moves", i.e. the tokens of frame ``t`` itself;
* ``surprise = mse / max(copy_mse, floor)``: 1.0 means the foresight was no better than
  assuming a still scene, below 1 it foresaw the motion, far above 1 it expected something
  else (a moved or missing object, a blocked camera, an object it never saw);
* ``cosine``: mean per-token cosine similarity between foresight and the tokens seen;
* ``relative_mse = mse / token_var``: the error against the spread of the seen tokens, not
  divided by the copy error. A sudden change (a blocked camera) fools the foresight and the
  copy alike for the first ``horizon`` frames, so their ratio stays near 1 until intents
  computed from the changed frames mispredict (measured: ~2.5 s); ``relative_mse`` jumps at
  the first frame. ``relative_error`` (0 = off) makes it an ERROR too.

The floor keeps a still scene (copy error near 0: the robot waiting, a frozen camera) from
turning a tiny foresight error into a huge ratio. It is relative, ``floor_fraction`` times
the per-feature variance of the seen tokens across the frame's tokens, so it does not depend
on the scale of the checkpoint's tokens: the default 0.05 counts a still scene as if 5 % of
the token spread had changed.
"""
import bisect
import collections
import dataclasses

import numpy as np

from dial_ros.core.checks import finite_number

LEVELS = ('OK', 'WARN', 'ERROR')


@dataclasses.dataclass
class Surprise:
    """One scored intent: stamps in seconds on the observations' clock."""

    stamp: float        # the intent's stamp (its observation)
    target_stamp: float  # the frame it was compared with
    surprise: float
    cosine: float
    mse: float
    copy_mse: float
    token_var: float    # per-feature variance of the seen tokens (the floor's reference)
    level: str = 'OK'

    @property
    def relative_mse(self):
        """The foresight error as a share of the seen tokens' variance."""
        return self.mse / max(self.token_var, np.finfo(np.float64).tiny)


def score(foresight, current, future, floor_fraction=0.05):
    """Return ``(surprise, cosine, mse, copy_mse, token_var)`` for (tokens, dim) arrays.

    ``current`` copy-predicts ``future`` with surprise 1.0 by construction (unless the floor
    applies); ValueError names a shape mismatch or non-finite values.
    """
    arrays = {'foresight': foresight, 'current': current, 'future': future}
    arrays = {k: np.asarray(v, np.float64) for k, v in arrays.items()}
    shape = arrays['future'].shape
    for name, value in arrays.items():
        if value.ndim != 2 or value.shape != shape:
            raise ValueError(f'{name}: shape {value.shape} does not match the observation '
                             f'tokens {shape} (tokens, dim)')
        if not np.all(np.isfinite(value)):
            raise ValueError(f'{name}: contains NaN or Inf')
    fore, cur, fut = arrays['foresight'], arrays['current'], arrays['future']
    mse = float(np.mean((fore - fut) ** 2))
    copy_mse = float(np.mean((cur - fut) ** 2))
    token_var = float(np.var(fut, axis=0).mean())
    denominator = max(copy_mse, floor_fraction * token_var, np.finfo(np.float64).tiny)
    norms = np.linalg.norm(fore, axis=1) * np.linalg.norm(fut, axis=1)
    cosine = float(np.mean(np.sum(fore * fut, axis=1) / np.maximum(norms, 1e-12)))
    return mse / denominator, cosine, mse, copy_mse, token_var


def level(surprise, warn, error, relative_mse=0.0, relative_error=0.0):
    """'OK', 'WARN' or 'ERROR' from the thresholds (``relative_error`` 0: not used)."""
    if surprise >= error or 0 < relative_error <= relative_mse:
        return 'ERROR'
    return 'WARN' if surprise >= warn else 'OK'


def check_thresholds(warn, error):
    """ValueError unless 0 < warn < error (names the offending threshold)."""
    warn = finite_number(warn, 'warn_threshold')
    error = finite_number(error, 'error_threshold')
    if warn <= 0:
        raise ValueError(f'warn_threshold: must be > 0, got {warn}')
    if error <= warn:
        raise ValueError(f'error_threshold ({error}) must be greater than warn_threshold '
                         f'({warn})')
    return warn, error


class ErrorRun:
    """How long the ERROR level has lasted without a break, on the scored intents' stamps.

    Scores come once per intent (a few Hz); two ERRORs further apart than ``max_gap_s`` (no
    score between them, e.g. frames missed) or a non-ERROR score end the run. The
    controller's ``surprise_takeover_s`` yields to the operator once :meth:`update` reaches
    it; the surprise evaluation replays the same rule on its scores.
    """

    def __init__(self, max_gap_s=1.0):
        self.max_gap_s = max_gap_s
        self.first = self.last = None

    def update(self, stamp, error):
        """Seconds the run has lasted at ``stamp`` (0.0 when this score is not an ERROR)."""
        if not error:
            self.first = self.last = None
            return 0.0
        if self.first is None or not 0.0 <= stamp - self.last <= self.max_gap_s:
            self.first = stamp
        self.last = stamp
        return stamp - self.first


class SurpriseMonitor:
    """Pairs intents with the observation their horizon points at and scores them.

    Feed it both streams in any order: ``add_observation(stamp, tokens)`` and
    ``add_intent(stamp, tokens, horizon)`` each return the list of :class:`Surprise`
    results that the new item completed. Memory is bounded: ``max_frames`` observations
    (enough to span the horizon) and ``max_pending`` intents; an intent whose target frame
    is overdue by more than ``tolerance_s`` (a dropped frame) or whose own observation is
    gone is dropped and counted in ``counts``. An intent that cannot be compared (a shape
    other than the frames') is dropped too, counted as ``bad_tensor``, its reason left in
    ``last_error`` for the caller to report (a producer's bad tensor never stops the other).
    """

    def __init__(self, period_s=0.05, tolerance_s=0.025, max_frames=64, max_pending=32,
                 floor_fraction=0.05, warn=2.5, error=5.0, relative_error=0.5):
        self.period_s = finite_number(period_s, 'period_s')
        self.tolerance_s = finite_number(tolerance_s, 'tolerance_s', low=0.0)
        if self.period_s <= 0:
            raise ValueError(f'period_s: must be > 0, got {period_s}')
        if self.tolerance_s >= self.period_s:
            raise ValueError(f'tolerance_s ({tolerance_s}) must be below period_s '
                             f'({period_s}), or one stamp matches two frames')
        self.floor_fraction = finite_number(floor_fraction, 'floor_fraction', low=0.0)
        self.set_thresholds(warn, error, relative_error)
        self._stamps = []                                  # sorted observation stamps
        self._frames = {}                                  # stamp -> tokens
        self.max_frames = int(max_frames)
        self._pending = collections.deque(maxlen=int(max_pending))  # (target, stamp, tokens)
        self.counts = {'scored': 0, 'no_current_frame': 0, 'target_missed': 0,
                       'pending_overflow': 0, 'bad_tensor': 0}
        self.last_error = ''

    def set_thresholds(self, warn, error, relative_error):
        """Change the thresholds (ValueError unless 0 < warn < error, relative_error >= 0)."""
        self.warn, self.error = check_thresholds(warn, error)
        self.relative_error = finite_number(relative_error, 'relative_mse_error', low=0.0)

    def reset(self):
        """Forget observations and pending intents (a new episode, a clock jump)."""
        self._stamps.clear()
        self._frames.clear()
        self._pending.clear()

    # --- inputs ------------------------------------------------------------------------
    def add_observation(self, stamp, tokens):
        """Store a frame; return the results of the pending intents that it completes."""
        stamp = finite_number(stamp, 'observation stamp')
        if stamp not in self._frames:
            bisect.insort(self._stamps, stamp)
            self._frames[stamp] = np.asarray(tokens, np.float32)
            while len(self._stamps) > self.max_frames:
                self._frames.pop(self._stamps.pop(0))
        done, keep = [], collections.deque(maxlen=self._pending.maxlen)
        newest = self._stamps[-1]
        for item in self._pending:
            target = self._find(item[0])
            if target is not None:
                done.append(self._score(item[1], item[2], target))
            elif newest > item[0] + self.tolerance_s:
                self.counts['target_missed'] += 1
            else:
                keep.append(item)
        self._pending = keep
        return [r for r in done if r is not None]

    def add_intent(self, stamp, tokens, horizon):
        """Queue an intent for ``horizon`` steps after ``stamp``; scored at once if possible."""
        stamp = finite_number(stamp, 'intent stamp')
        if int(horizon) < 1:
            raise ValueError(f'horizon: must be >= 1 step to be checked, got {horizon}')
        target = stamp + int(horizon) * self.period_s
        tokens = np.asarray(tokens, np.float32)
        found = self._find(target)
        if found is not None:
            result = self._score(stamp, tokens, found)
            return [result] if result is not None else []
        if len(self._pending) == self._pending.maxlen:
            self.counts['pending_overflow'] += 1
        self._pending.append((target, stamp, tokens))
        return []

    # --- matching and scoring -----------------------------------------------------------
    def _find(self, stamp):
        """The stored observation stamp nearest ``stamp`` within the tolerance, or None."""
        i = bisect.bisect_left(self._stamps, stamp)
        near = [s for s in self._stamps[max(0, i - 1):i + 1] if abs(s - stamp) <= self.tolerance_s]
        return min(near, key=lambda s: abs(s - stamp)) if near else None

    def _score(self, stamp, foresight, target):
        current = self._find(stamp)
        if current is None:
            self.counts['no_current_frame'] += 1
            return None
        try:
            value, cosine, mse, copy_mse, token_var = score(
                foresight, self._frames[current], self._frames[target], self.floor_fraction)
        except ValueError as err:
            self.counts['bad_tensor'] += 1
            self.last_error = f'intent stamped {stamp:.6f}: {err}'
            return None
        self.counts['scored'] += 1
        result = Surprise(stamp, target, value, cosine, mse, copy_mse, token_var)
        result.level = level(value, self.warn, self.error, result.relative_mse,
                             self.relative_error)
        return result
