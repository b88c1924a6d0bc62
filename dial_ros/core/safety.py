"""Safety layer applied to every joint position command before it leaves the controller.

Per tick, in this order: hold if e-stopped, if the input is stale or missing, or if the
target or measured pose is malformed; otherwise clamp the target to the position limits,
blend it in from the ramp origin while a ramp runs (after start or resume), and limit the
change from the previous command to ``min(max_velocity * dt, max_step)`` per joint.

The change is limited by scaling the whole step (then clipping per joint for float safety),
so the command keeps its direction in joint space instead of bending the path joint by joint.
A hold repeats the last command (or the measured pose when nothing was commanded yet); it
never follows the measured pose, which would let gravity pull the arm down. A ramp starts
from the measured pose after start-up and after an e-stop release (the arm may have been
moved), and from the held command when tracking resumes after a stale or invalid input.
Whatever the ramp's origin, every command is step-limited against the last command sent:
after a release the stream walks from the held command to the measured pose and on to the
new target, never jumps (only :meth:`reset` forgets the last command).
"""
import dataclasses
import enum
import logging
import threading

import numpy as np

from dial_ros.core.checks import finite_number

LOGGER = logging.getLogger(__name__)


def check_vector(value, size, field):
    """Return ``value`` as a finite float64 vector of ``size``; ValueError names the field."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != (size,):
        raise ValueError(f'{field}: expected shape ({size},), got {arr.shape}')
    if not np.all(np.isfinite(arr)):
        bad = np.flatnonzero(~np.isfinite(arr))
        raise ValueError(f'{field}: contains NaN/Inf at joint indices {bad[:8].tolist()}')
    return arr


def _per_joint(value, size, field):
    arr = np.asarray(value, dtype=np.float64)
    return check_vector(np.full(size, arr) if arr.ndim == 0 else arr, size, field)


def _finite_or_nan(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return float('nan')


@dataclasses.dataclass
class SafetyLimits:
    """Per-joint position limits, velocity limit (units/s) and max change per tick (units).

    Scalars for ``max_velocity`` and ``max_step`` apply to every joint; ``max_step=None``
    leaves only the velocity limit.
    """

    lower: np.ndarray
    upper: np.ndarray
    max_velocity: np.ndarray
    max_step: np.ndarray = None

    def __post_init__(self):
        lower = np.asarray(self.lower, dtype=np.float64)
        if lower.ndim != 1 or lower.size == 0:
            raise ValueError(f'lower: expected a non-empty 1-D array, got shape {lower.shape}')
        n = lower.size
        self.lower = check_vector(lower, n, 'lower')
        self.upper = check_vector(self.upper, n, 'upper')
        bad = np.flatnonzero(self.lower >= self.upper)
        if bad.size:
            raise ValueError(f'lower/upper: lower must be < upper (joint indices '
                             f'{bad[:8].tolist()})')
        self.max_velocity = _per_joint(self.max_velocity, n, 'max_velocity')
        if np.any(self.max_velocity <= 0):
            raise ValueError('max_velocity: must be positive for every joint')
        if self.max_step is None:
            self.max_step = np.full(n, np.inf)
        else:
            self.max_step = _per_joint(self.max_step, n, 'max_step')
            if np.any(self.max_step <= 0):
                raise ValueError('max_step: must be positive for every joint')

    @property
    def num_joints(self):
        return self.lower.size

    @classmethod
    def from_embodiment(cls, spec, max_step=None):
        """Limits from an :class:`~dial_ros.embodiment.EmbodimentSpec`."""
        return cls(spec.position_lower, spec.position_upper, spec.velocity_limit, max_step)


class SafetyState(enum.Enum):
    """What the filter did this tick (diagnostics map HOLD_* and ESTOP to WARN/ERROR)."""

    OK = 'ok'
    RAMPING = 'ramping'
    HOLD_STALE = 'hold_stale'
    HOLD_INVALID = 'hold_invalid'
    ESTOP = 'estop'


@dataclasses.dataclass(frozen=True)
class SafetyStatus:
    """Outcome of one tick: the state plus flags for what was modified."""

    state: SafetyState
    clamped: bool = False
    rate_limited: bool = False
    send: bool = True
    ramp_progress: float = 1.0
    reason: str = ''

    @property
    def holding(self):
        return self.state in (SafetyState.HOLD_STALE, SafetyState.HOLD_INVALID,
                              SafetyState.ESTOP)


class SafetyFilter:
    """Stateful per-tick filter; see the module docstring for the order of the stages.

    ``ramp_time_s``: duration of the ease-in from the ramp origin to the target (0: none).
    ``stale_timeout_s``: inputs older than this are not followed; the filter holds.
    ``nominal_period_s``: dt assumed on the first tick. ``max_dt_s``: cap on dt, so a
    stalled loop does not earn a large velocity budget on its next tick.
    ``dry_run``: everything is computed but ``status.send`` is False.
    """

    _PARAMS = ('ramp_time_s', 'stale_timeout_s', 'nominal_period_s', 'max_dt_s', 'dry_run')

    def __init__(self, limits, ramp_time_s=1.0, stale_timeout_s=0.2, nominal_period_s=0.01,
                 max_dt_s=0.1, dry_run=False):
        if not isinstance(limits, SafetyLimits):
            raise ValueError(f'limits: expected SafetyLimits, got {type(limits).__name__}')
        self.limits = limits
        self.ramp_time_s, self.stale_timeout_s = 0.0, 0.0
        self.nominal_period_s, self.max_dt_s, self.dry_run = 0.0, 0.0, False
        self.set_params(ramp_time_s=ramp_time_s, stale_timeout_s=stale_timeout_s,
                        nominal_period_s=nominal_period_s, max_dt_s=max_dt_s, dry_run=dry_run)
        self._estopped = False
        # e-stop and release may come from a service thread while the control timer ticks
        self._lock = threading.RLock()
        self.reset()

    def set_params(self, **params):
        """Validate and apply parameters at once (live parameter updates go through here)."""
        unknown = sorted(set(params) - set(self._PARAMS))
        if unknown:
            raise ValueError(f'{unknown[0]}: unknown parameter (known: {list(self._PARAMS)})')
        new = {name: getattr(self, name) for name in self._PARAMS}
        new.update(params)
        checked = {name: finite_number(new[name], name, 0.0) for name in (
            'ramp_time_s', 'stale_timeout_s', 'nominal_period_s', 'max_dt_s')}
        checked['dry_run'] = new['dry_run']
        for name in ('stale_timeout_s', 'nominal_period_s'):
            if checked[name] <= 0:
                raise ValueError(f'{name}: must be > 0, got {checked[name]}')
        if checked['max_dt_s'] < checked['nominal_period_s']:
            raise ValueError(f'max_dt_s: must be >= nominal_period_s '
                             f'({checked["nominal_period_s"]}), got {checked["max_dt_s"]}')
        if not isinstance(checked['dry_run'], bool):
            raise ValueError(f'dry_run: expected a bool, got {checked["dry_run"]!r}')
        for name, value in checked.items():
            setattr(self, name, value)

    def reset(self):
        """Start afresh: the next tracked target ramps in from the measured pose."""
        with self._lock:
            self._last_cmd = None
            self._last_now = None
            self._tracking = False
            self._ramp_start = None
            self._ramp_origin = None
            self._ramp_from_measured = False

    @property
    def last_command(self):
        return None if self._last_cmd is None else self._last_cmd.copy()

    @property
    def estopped(self):
        return self._estopped

    def estop(self, reason='e-stop'):
        """Latch the e-stop: every tick holds position until :meth:`release`."""
        with self._lock:
            if not self._estopped:
                LOGGER.warning('safety: e-stop latched (%s)', reason)
            self._estopped = True

    def release(self):
        """Clear the latch; the robot may have been moved, so re-ramp from the measured pose.

        The last command sent is kept: the first commands after the release step from it
        towards the measured pose under the step and velocity limits.
        """
        # e-stop and release may come from a service thread while the control loop ticks
        with self._lock:
            if self._estopped:
                LOGGER.info('safety: e-stop released; re-ramping from the measured pose')
            self._estopped = False
            self.resume()

    def resume(self, from_measured=True):
        """Ramp the next tracked target in from the measured pose (after a pause in which the
        arm may have moved), stepping from the last command sent, never jumping to the pose.

        ``from_measured=False`` ramps from the last command instead (a new source of targets
        takes over a stream that never paused, e.g. an operator taking over the policy).
        """
        with self._lock:
            self._ramp_from_measured = bool(from_measured)
            self._tracking = False
            self._ramp_start = None

    def filter(self, target, measured, now_s, input_age_s):
        """Return ``(command, status)`` for one tick.

        ``target``: desired joint positions (None: no input, hold). ``measured``: current
        joint positions. ``input_age_s``: age of the data the target was computed from.
        ``command`` is None only when nothing safe exists (no valid pose yet).
        """
        now = finite_number(now_s, 'now_s')
        with self._lock:
            return self._filter(target, measured, now, input_age_s)

    def _filter(self, target, measured, now, input_age_s):
        if self._last_now is None:
            dt = self.nominal_period_s
        else:
            # a clock that stands still or jumps back grants no motion this tick
            dt = min(max(now - self._last_now, 0.0), self.max_dt_s)
        self._last_now = now
        n = self.limits.num_joints
        try:
            measured, measured_error = check_vector(measured, n, 'measured'), ''
        except ValueError as err:
            measured, measured_error = None, str(err)
        if self._estopped:
            return self._hold(SafetyState.ESTOP, 'e-stop latched', measured)
        if measured is None:
            return self._hold(SafetyState.HOLD_INVALID, measured_error, None)
        age = float('nan') if input_age_s is None else _finite_or_nan(input_age_s)
        if target is None:
            return self._hold(SafetyState.HOLD_STALE, 'no target', measured)
        if not age <= self.stale_timeout_s:  # NaN ages count as stale
            return self._hold(SafetyState.HOLD_STALE, f'input age {age:.3f} s exceeds '
                              f'stale_timeout_s {self.stale_timeout_s:.3f} s', measured)
        try:
            target = check_vector(target, n, 'target')
        except ValueError as err:
            return self._hold(SafetyState.HOLD_INVALID, str(err), measured)
        return self._track(target, measured, now, dt)

    def _track(self, target, measured, now, dt):
        lim = self.limits
        if not self._tracking:
            # start or resume: ease in from what was last commanded, else (at start, after
            # a release) from the measured pose; the step limit still applies from _last_cmd
            if self._last_cmd is None:
                self._last_cmd = measured.copy()
            origin = measured if self._ramp_from_measured else self._last_cmd
            self._ramp_origin = origin.copy()
            self._ramp_from_measured = False
            self._ramp_start = now
            self._tracking = True
        goal = np.clip(target, lim.lower, lim.upper)
        clamped = bool(np.any(goal != target))
        progress = 1.0
        if self._ramp_start is not None:
            elapsed = now - self._ramp_start
            progress = 1.0 if self.ramp_time_s <= 0 else min(max(elapsed, 0.0)
                                                             / self.ramp_time_s, 1.0)
            s = progress * progress * (3.0 - 2.0 * progress)  # smoothstep: zero end slopes
            goal = self._ramp_origin + s * (goal - self._ramp_origin)
            if progress >= 1.0:
                self._ramp_start = None
        cmd, limited = self._rate_limit(goal, dt)
        self._last_cmd = cmd
        state = SafetyState.OK if progress >= 1.0 else SafetyState.RAMPING
        return cmd.copy(), SafetyStatus(state, clamped, limited, not self.dry_run, progress)

    def _rate_limit(self, goal, dt):
        last, lim = self._last_cmd, self.limits
        max_delta = np.minimum(lim.max_velocity * dt, lim.max_step)
        delta = goal - last
        excess = np.divide(np.abs(delta), max_delta, out=np.zeros_like(delta),
                           where=max_delta > 0)
        excess[(max_delta <= 0) & (delta != 0)] = np.inf
        worst = float(np.max(excess))
        if worst <= 1.0:
            return goal.copy(), False
        step = np.clip(delta / worst, -max_delta, max_delta)
        # stay inside the limits, or between them and a measured pose that started outside
        cmd = np.clip(last + step, np.minimum(lim.lower, last), np.maximum(lim.upper, last))
        return cmd, True

    def _hold(self, state, reason, measured):
        self._tracking = False
        self._ramp_start = None
        if self._last_cmd is None and measured is not None:
            self._last_cmd = measured.copy()
        cmd = None if self._last_cmd is None else self._last_cmd.copy()
        send = cmd is not None and not self.dry_run
        return cmd, SafetyStatus(state, send=send, ramp_progress=0.0, reason=reason)
