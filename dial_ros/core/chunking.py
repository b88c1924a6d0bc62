"""Chunk scheduling: turn action chunks (~10-30 Hz) into joint targets at the command rate.

A chunk is ``H x J`` joint positions; waypoint ``k`` belongs to time ``t0 + k * dt``, where
``t0`` is the stamp of the observation the chunk was computed from. The scheduler treats each
chunk as a trajectory in absolute time and samples it at the time of each command:

* latency compensation falls out of that: the waypoints that went stale while the model ran
  are never commanded; the first command after a push is the chunk's value *now*, not its
  waypoint 0, so the arm does not "go back a few steps" at each new chunk;
* upsampling between waypoints is linear or cubic Hermite with Catmull-Rom tangents
  (interpolating, so exact at waypoints, C1, and local: no global solve, no scipy);
* transitions are crossfaded: for ``blend_time_s`` after a push the command is
  ``(1 - w) * old(t) + w * new(t)`` with ``w`` a smoothstep of the elapsed time, so both the
  position and (since w' = 0 at the start) the velocity are continuous at the switch. The old
  trajectory may itself still be blending; past its end it holds its last waypoint, which is
  what the caller was holding. This is LeRobot-style blending, not temporal ensembling.
"""
import logging
import threading

import numpy as np

from dial_ros.core.checks import finite_number

LOGGER = logging.getLogger(__name__)

INTERPOLATIONS = ('linear', 'cubic')


def _number(value, field, positive=False):
    out = finite_number(value, field)
    if out < 0 or (positive and out == 0):
        raise ValueError(f'{field}: must be {"> 0" if positive else ">= 0"}, got {out}')
    return out


def _smoothstep(x):
    x = min(max(x, 0.0), 1.0)
    return x * x * (3.0 - 2.0 * x)


class _Chunk:
    """One chunk as a trajectory over ``[t0, t0 + (H - 1) * dt]``, held outside it."""

    def __init__(self, waypoints, t0, dt, interpolation):
        self.waypoints, self.t0, self.dt = waypoints, t0, dt
        self.end = t0 + (len(waypoints) - 1) * dt
        self.cubic = interpolation == 'cubic' and len(waypoints) > 2
        if self.cubic:
            # tangents per step: central differences, one-sided at the ends
            p = waypoints
            self.tangents = np.empty_like(p)
            self.tangents[1:-1] = 0.5 * (p[2:] - p[:-2])
            self.tangents[0], self.tangents[-1] = p[1] - p[0], p[-1] - p[-2]

    def at(self, t):
        p, last = self.waypoints, len(self.waypoints) - 1
        if last == 0:
            return p[0].copy()
        s = min(max((t - self.t0) / self.dt, 0.0), float(last))
        k = min(int(s), last - 1)
        u = s - k
        if not self.cubic:
            return p[k] + u * (p[k + 1] - p[k])
        u2, u3 = u * u, u * u * u
        m = self.tangents
        return ((2 * u3 - 3 * u2 + 1) * p[k] + (u3 - 2 * u2 + u) * m[k]
                + (3 * u2 - 2 * u3) * p[k + 1] + (u3 - u2) * m[k + 1])


class _Blend:
    """Crossfade from ``old`` to ``new`` over ``[start, start + duration]``."""

    def __init__(self, old, new, start, duration):
        self.old, self.new, self.start, self.stop = old, new, start, start + duration

    def at(self, t):
        if t >= self.stop:
            return self.new.at(t)
        w = _smoothstep((t - self.start) / (self.stop - self.start))
        return (1.0 - w) * self.old.at(t) + w * self.new.at(t)


def _prune(traj, now):
    """Drop finished crossfades so the blend chain stays as short as the overlap."""
    while isinstance(traj, _Blend) and now >= traj.stop:
        traj = traj.new
    if isinstance(traj, _Blend):
        traj.old = _prune(traj.old, now)
    return traj


class ChunkScheduler:
    """Hold the newest chunk, blend transitions, and sample joint targets at any time.

    ``dt``: seconds between waypoints (a chunk may override it). ``blend_time_s``: crossfade
    duration after each push (0: switch at once). ``num_joints``: J, or None to take it from
    the first chunk. Thread-safe: inference may push while the control timer samples.
    """

    def __init__(self, dt, blend_time_s=0.1, interpolation='linear', num_joints=None):
        self._lock = threading.Lock()
        self.dt, self.blend_time_s, self.interpolation = 1.0, 0.0, 'linear'
        self.set_params(dt=dt, blend_time_s=blend_time_s, interpolation=interpolation)
        if num_joints is not None and (not isinstance(num_joints, int) or num_joints < 1):
            raise ValueError(f'num_joints: expected an int >= 1, got {num_joints!r}')
        self.num_joints = num_joints
        self.reset()

    def set_params(self, **params):
        """Validate and apply ``dt``, ``blend_time_s`` or ``interpolation`` (next push on)."""
        known = ('dt', 'blend_time_s', 'interpolation')
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ValueError(f'{unknown[0]}: unknown parameter (known: {list(known)})')
        dt = _number(params.get('dt', self.dt), 'dt', positive=True)
        blend = _number(params.get('blend_time_s', self.blend_time_s), 'blend_time_s')
        interpolation = params.get('interpolation', self.interpolation)
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f'interpolation: {interpolation!r} is not one of '
                             f'{list(INTERPOLATIONS)}')
        with self._lock:
            self.dt, self.blend_time_s, self.interpolation = dt, blend, interpolation

    def reset(self):
        """Forget every chunk (after an e-stop, or when the clock jumps back)."""
        with self._lock:
            self._traj = None
            self._current = None
            self.last_skipped = 0
            self.last_latency_s = None

    @property
    def t0(self):
        """Observation stamp of the newest accepted chunk, or None."""
        current = self._current
        return None if current is None else current.t0

    def push(self, chunk, t0, now_s, dt=None):
        """Start following ``chunk`` (H x J) computed from the observation at ``t0``.

        Returns how many waypoints were already in the past at ``now_s`` (skipped). A chunk
        entirely in the past is dropped with a warning and the current one kept. Raises
        ValueError for a malformed chunk, a non-finite time, or ``t0`` older than the
        current chunk's (out of order; an equal ``t0`` replaces it).
        """
        waypoints = np.array(chunk, dtype=np.float64)
        if waypoints.ndim != 2 or 0 in waypoints.shape:
            raise ValueError(f'chunk: expected a non-empty H x J array, got shape '
                             f'{waypoints.shape}')
        if self.num_joints is not None and waypoints.shape[1] != self.num_joints:
            raise ValueError(f'chunk: expected {self.num_joints} joints, got '
                             f'{waypoints.shape[1]}')
        if not np.all(np.isfinite(waypoints)):
            rows = np.flatnonzero(~np.all(np.isfinite(waypoints), axis=1))
            raise ValueError(f'chunk: contains NaN/Inf in waypoints {rows[:8].tolist()}')
        t0 = finite_number(t0, 't0')
        now = finite_number(now_s, 'now_s')
        dt = self.dt if dt is None else _number(dt, 'dt', positive=True)
        with self._lock:
            if self._current is not None and t0 < self._current.t0:
                raise ValueError(f't0: out of order: {t0:.6f} is older than the current '
                                 f'chunk\'s {self._current.t0:.6f}')
            new = _Chunk(waypoints, t0, dt, self.interpolation)
            skipped = int(np.count_nonzero(t0 + np.arange(len(waypoints)) * dt < now))
            self.last_skipped, self.last_latency_s = skipped, now - t0
            if new.end < now:
                LOGGER.warning('chunk from t0=%.3f arrived %.3f s late and is entirely in '
                               'the past; dropped', t0, now - t0)
                return skipped
            if self.num_joints is None:
                self.num_joints = waypoints.shape[1]
            if self._traj is not None and self.blend_time_s > 0:
                self._traj = _Blend(_prune(self._traj, now), new, now, self.blend_time_s)
            else:
                self._traj = new
            self._current = new
            return skipped

    def sample(self, now_s):
        """Joint targets at ``now_s``, or None when there is no chunk or it has run out."""
        now = finite_number(now_s, 'now_s')
        with self._lock:
            if self._traj is None or now > self._current.end:
                return None
            self._traj = _prune(self._traj, now)
            return self._traj.at(now)

    def remaining(self, now_s):
        """Seconds of the newest chunk left after ``now_s`` (0.0 when none)."""
        now = finite_number(now_s, 'now_s')
        current = self._current
        return 0.0 if current is None else max(0.0, current.end - now)


# A frame this fraction of 1 / chunk rate after the previous chunk's frame counts as due: the
# slack absorbs camera jitter (a 20 Hz camera under a 10 Hz bound: every other frame, always).
FRAME_SLACK = 0.9


def frame_due(last_stamp, stamp, max_rate_hz):
    """Whether a frame stamped ``stamp`` gets a chunk under the ``max_rate_hz`` bound.

    ``last_stamp``: the frame of the previous chunk (None: none yet). A frame older than it
    (the clock went back: a sim or bag restart) is due.
    """
    if last_stamp is None or stamp < last_stamp:
        return True
    return stamp - last_stamp >= FRAME_SLACK / max_rate_hz
