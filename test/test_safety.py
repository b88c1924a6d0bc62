"""Tests for the joint-command safety layer (no ROS needed)."""
import math

import numpy as np
import pytest

from dial_ros.core.safety import SafetyFilter, SafetyLimits, SafetyState

J = 4
LOWER = np.array([-1.0, -2.0, -0.5, 0.0])
UPPER = np.array([1.0, 2.0, 0.5, 3.0])
VMAX = np.array([1.0, 2.0, 0.5, 1.5])


def make_limits(max_step=None):
    return SafetyLimits(LOWER, UPPER, VMAX, max_step)


def make_filter(**kwargs):
    kwargs.setdefault('ramp_time_s', 0.0)
    return SafetyFilter(make_limits(kwargs.pop('max_step', None)), **kwargs)


def run_until_settled(filt, target, measured, now, period=0.01, ticks=500):
    cmd = status = None
    for k in range(ticks):
        cmd, status = filt.filter(target, measured, now + k * period, 0.0)
    return cmd, status, now + ticks * period


def test_limits_validation_names_the_field():
    with pytest.raises(ValueError, match='upper'):
        SafetyLimits(LOWER, UPPER[:3], VMAX)
    with pytest.raises(ValueError, match='lower/upper'):
        SafetyLimits(UPPER, LOWER, VMAX)
    with pytest.raises(ValueError, match='max_velocity'):
        SafetyLimits(LOWER, UPPER, -VMAX)
    with pytest.raises(ValueError, match='max_velocity'):
        SafetyLimits(LOWER, UPPER, VMAX[:2])
    with pytest.raises(ValueError, match='max_step'):
        SafetyLimits(LOWER, UPPER, VMAX, 0.0)
    with pytest.raises(ValueError, match='lower'):
        SafetyLimits([[0.0, 1.0]], [[1.0, 2.0]], 1.0)
    with pytest.raises(ValueError, match='NaN'):
        SafetyLimits([math.nan, 0.0], [1.0, 1.0], 1.0)
    limits = SafetyLimits(LOWER, UPPER, 2.0, 0.01)  # scalars broadcast
    assert limits.num_joints == J
    np.testing.assert_array_equal(limits.max_velocity, np.full(J, 2.0))


def test_filter_parameter_validation():
    with pytest.raises(ValueError, match='limits'):
        SafetyFilter({'lower': LOWER})
    with pytest.raises(ValueError, match='ramp_time_s'):
        make_filter(ramp_time_s=-1.0)
    with pytest.raises(ValueError, match='stale_timeout_s'):
        make_filter(stale_timeout_s=0.0)
    with pytest.raises(ValueError, match='max_dt_s'):
        make_filter(nominal_period_s=0.1, max_dt_s=0.01)
    filt = make_filter()
    with pytest.raises(ValueError, match='bogus'):
        filt.set_params(bogus=1)
    with pytest.raises(ValueError, match='dry_run'):
        filt.set_params(dry_run='yes')
    with pytest.raises(ValueError, match='now_s'):
        filt.filter(np.zeros(J), np.zeros(J), math.nan, 0.0)


def test_clamps_to_position_limits():
    filt = make_filter()
    target = np.array([5.0, -5.0, 0.1, 10.0])
    cmd, status, _ = run_until_settled(filt, target, np.zeros(J), 0.0)
    np.testing.assert_allclose(cmd, [1.0, -2.0, 0.1, 3.0])
    assert status.clamped and status.state == SafetyState.OK


def test_velocity_limit_uses_dt_from_the_clock_and_keeps_direction():
    filt = make_filter()
    target = np.array([0.8, 0.8, 0.4, 0.8])
    filt.filter(target, np.zeros(J), 0.0, 0.0)  # first tick: nominal period 0.01 s
    cmd, status = filt.filter(target, np.zeros(J), 0.02, 0.0)
    # joint 2 (0.5 units/s) binds: 0.01 + 0.01 of travel over 0.02 s; the others scale with it
    assert status.rate_limited
    np.testing.assert_allclose(cmd[2], 0.5 * 0.03)
    np.testing.assert_allclose(cmd / np.linalg.norm(cmd), target / np.linalg.norm(target))


def test_velocity_and_step_never_exceeded_over_random_ticks():
    rng = np.random.default_rng(1)
    max_step = np.array([0.004, 0.05, 0.002, 0.01])
    filt = make_filter(max_step=max_step, ramp_time_s=0.3, stale_timeout_s=0.05,
                       nominal_period_s=0.01, max_dt_s=0.05)
    now, prev_now, prev = 0.0, None, None
    measured = rng.uniform(LOWER, UPPER)
    for k in range(3000):
        now += rng.choice([0.0, rng.uniform(0.001, 0.03), rng.uniform(0.05, 0.3)],
                          p=[0.05, 0.9, 0.05])
        target = rng.uniform(LOWER - 1.0, UPPER + 1.0)
        if k % 97 == 0:
            target[rng.integers(J)] = math.nan
        age = rng.choice([0.0, 0.02, 0.1], p=[0.6, 0.3, 0.1])
        cmd, status = filt.filter(target, measured, now, age)
        assert np.all(cmd >= LOWER) and np.all(cmd <= UPPER)
        if prev is not None:
            dt = min(now - prev_now, 0.05)
            bound = np.minimum(VMAX * dt, max_step)
            assert np.all(np.abs(cmd - prev) <= bound + 1e-12), (k, status)
        prev, prev_now = cmd, now
        measured = cmd + rng.normal(0.0, 1e-3, J)


def test_ramp_starts_at_the_measured_pose_and_eases_in():
    filt = make_filter(ramp_time_s=1.0)
    measured = np.array([0.5, -1.0, 0.2, 1.0])
    target = np.zeros(J)
    cmd, status = filt.filter(target, measured, 10.0, 0.0)
    np.testing.assert_array_equal(cmd, measured)
    assert status.state == SafetyState.RAMPING and status.ramp_progress == 0.0
    cmds = [cmd]
    for k in range(1, 121):
        cmd, status = filt.filter(target, measured, 10.0 + 0.01 * k, 0.0)
        cmds.append(cmd)
    cmds = np.array(cmds)
    steps = np.abs(np.diff(cmds, axis=0))
    assert steps[0].max() < 1e-3  # smoothstep: leaves the measured pose gently
    assert steps.max() < 0.02  # no jump anywhere on the way (1.5 * distance / ramp time)
    np.testing.assert_allclose(cmds[-1], target)
    assert status.state == SafetyState.OK


def test_measured_pose_outside_limits_is_not_snapped():
    filt = make_filter(ramp_time_s=0.5)
    measured = np.array([1.2, 0.0, 0.0, 1.0])  # joint 0 beyond its upper limit
    cmd, _ = filt.filter(measured, measured, 0.0, 0.0)
    np.testing.assert_array_equal(cmd, measured)
    cmd2, status = filt.filter(measured, measured, 0.01, 0.0)
    assert cmd2[0] < cmd[0] and cmd[0] - cmd2[0] <= VMAX[0] * 0.01 + 1e-12
    assert status.clamped


def test_stale_input_holds_last_command_then_re_ramps():
    filt = make_filter(ramp_time_s=0.5, stale_timeout_s=0.1)
    measured = np.zeros(J)
    held, _, now = run_until_settled(filt, np.full(J, 0.3), measured, 0.0)
    for k in range(5):
        cmd, status = filt.filter(np.full(J, -0.3), measured, now + 0.01 * k, 0.5)
        np.testing.assert_array_equal(cmd, held)
        assert status.state == SafetyState.HOLD_STALE and status.holding
        assert 'stale_timeout_s' in status.reason
    cmd, status = filt.filter(np.full(J, -0.3), measured, now + 0.05, 0.0)
    np.testing.assert_array_equal(cmd, held)  # resumes from the held command
    assert status.state == SafetyState.RAMPING
    cmd, status = filt.filter(None, measured, now + 0.06, 0.0)
    assert status.state == SafetyState.HOLD_STALE and status.reason == 'no target'
    cmd, status = filt.filter(np.zeros(J), measured, now + 0.07, math.nan)
    assert status.state == SafetyState.HOLD_STALE


def test_hold_without_any_command_uses_the_measured_pose_once():
    filt = make_filter()
    first = np.array([0.1, 0.2, 0.3, 0.4])
    cmd, status = filt.filter(None, first, 0.0, 0.0)
    np.testing.assert_array_equal(cmd, first)
    # the hold does not chase the measured pose (that would let gravity win)
    cmd, status = filt.filter(None, first - 0.05, 0.01, 0.0)
    np.testing.assert_array_equal(cmd, first)


def test_estop_holds_and_release_re_ramps_from_measured():
    filt = make_filter(ramp_time_s=0.5)
    measured = np.zeros(J)
    held, _, now = run_until_settled(filt, np.full(J, 0.3), measured, 0.0)
    filt.estop('test')
    assert filt.estopped
    for k in range(5):
        cmd, status = filt.filter(np.full(J, -0.4), measured, now + 0.01 * k, 0.0)
        np.testing.assert_array_equal(cmd, held)
        assert status.state == SafetyState.ESTOP and status.send
    filt.release()
    moved = np.array([0.1, -0.2, 0.05, 0.5])  # someone moved the arm during the stop
    cmd, status = filt.filter(np.full(J, -0.4), moved, now + 0.1, 0.0)
    assert status.state == SafetyState.RAMPING
    # no jump: the first command steps from the held one towards the measured pose
    step = cmd - held
    assert np.all(np.abs(step) <= VMAX * 0.1 + 1e-12)
    assert np.all(np.sign(step) == np.sign(moved - held))
    # and converges on the target the ramp carries it to, within the limits all the way
    cmds = [filt.filter(np.full(J, -0.4), moved, now + 0.1 + 0.01 * k, 0.0)[0]
            for k in range(1, 200)]
    assert np.all(np.abs(np.diff([cmd] + cmds, axis=0)) <= VMAX * 0.01 + 1e-12)
    np.testing.assert_allclose(cmds[-1], np.clip(np.full(J, -0.4), LOWER, UPPER), atol=1e-9)


def test_no_command_steps_more_than_max_step_across_every_transition():
    """Start, tracking, e-stop latch and release (arm moved meanwhile), stale hold and
    resume, an invalid target, a reset-free restart of the ramp: every consecutive pair of
    sent commands differs by at most max_step."""
    rng = np.random.default_rng(0)
    max_step = 0.01
    filt = make_filter(max_step=max_step, ramp_time_s=0.3, stale_timeout_s=0.05)
    measured, now, sent = np.full(J, 0.2), 0.0, []
    events = ['track'] * 30 + ['estop'] * 5 + ['release'] * 5 + ['stale'] * 5 + \
        ['invalid'] * 3 + ['move'] * 5
    for _ in range(3000):
        event = events[rng.integers(len(events))]
        if event == 'estop':
            filt.estop('test')
        elif event == 'release':
            filt.release()
        elif event == 'move':  # the arm is pushed or sags while nobody commands it
            measured = np.clip(measured + rng.normal(0, 0.3, J), LOWER, UPPER)
        target = rng.uniform(LOWER - 0.2, UPPER + 0.2)
        age = 1.0 if event == 'stale' else 0.0
        if event == 'invalid':
            target[rng.integers(J)] = math.nan
        now += 0.01
        cmd, status = filt.filter(target, measured, now, age)
        if status.send:
            sent.append(cmd)
    steps = np.abs(np.diff(np.stack(sent), axis=0))
    assert steps.max() <= max_step + 1e-12
    assert steps.max() > 0.9 * max_step  # it did move at the limit


def test_estop_before_any_command_holds_measured():
    filt = make_filter()
    filt.estop()
    measured = np.full(J, 0.2)
    cmd, status = filt.filter(np.zeros(J), measured, 0.0, 0.0)
    np.testing.assert_array_equal(cmd, measured)
    assert status.state == SafetyState.ESTOP


def test_invalid_target_is_rejected_and_the_filter_holds():
    filt = make_filter()
    held, _, now = run_until_settled(filt, np.full(J, 0.2), np.zeros(J), 0.0)
    bad = np.full(J, 0.9)
    bad[1] = math.nan
    cmd, status = filt.filter(bad, np.zeros(J), now, 0.0)
    np.testing.assert_array_equal(cmd, held)
    assert status.state == SafetyState.HOLD_INVALID
    assert 'target' in status.reason and 'NaN' in status.reason and '[1]' in status.reason
    cmd, status = filt.filter(np.full(J + 1, 0.1), np.zeros(J), now + 0.01, 0.0)
    assert status.state == SafetyState.HOLD_INVALID and 'shape' in status.reason
    np.testing.assert_array_equal(cmd, held)
    cmd, status = filt.filter([0.1, math.inf, 0.0, 0.0], np.zeros(J), now + 0.02, 0.0)
    assert status.state == SafetyState.HOLD_INVALID


def test_invalid_measured_pose_holds_or_gives_nothing():
    filt = make_filter()
    cmd, status = filt.filter(np.zeros(J), np.full(J, math.nan), 0.0, 0.0)
    assert cmd is None and not status.send
    assert status.state == SafetyState.HOLD_INVALID and 'measured' in status.reason
    held, _, now = run_until_settled(filt, np.full(J, 0.1), np.zeros(J), 1.0)
    cmd, status = filt.filter(np.zeros(J), np.zeros(J - 1), now, 0.0)
    np.testing.assert_array_equal(cmd, held)
    assert status.state == SafetyState.HOLD_INVALID


def test_dry_run_computes_but_marks_not_to_send():
    filt = make_filter(dry_run=True)
    cmd, status = filt.filter(np.full(J, 0.001), np.zeros(J), 0.0, 0.0)
    np.testing.assert_allclose(cmd, np.full(J, 0.001))
    assert not status.send
    filt.set_params(dry_run=False)
    _, status = filt.filter(np.full(J, 0.001), np.zeros(J), 0.01, 0.0)
    assert status.send


def test_clock_standing_still_or_going_back_grants_no_motion():
    filt = make_filter()
    first, _ = filt.filter(np.full(J, 0.5), np.zeros(J), 5.0, 0.0)
    same, status = filt.filter(np.full(J, 0.5), np.zeros(J), 5.0, 0.0)
    np.testing.assert_array_equal(same, first)
    back, _ = filt.filter(np.full(J, 0.5), np.zeros(J), 4.0, 0.0)
    np.testing.assert_array_equal(back, first)


def test_limits_from_embodiment_like_spec():
    class Spec:
        position_lower, position_upper, velocity_limit = LOWER, UPPER, VMAX

    limits = SafetyLimits.from_embodiment(Spec, max_step=0.01)
    np.testing.assert_array_equal(limits.max_step, np.full(J, 0.01))
