"""Tests for chunk scheduling: latency compensation, interpolation and blending."""
import math

import numpy as np
import pytest

from dial_ros.core.chunking import ChunkScheduler

DT = 0.1
H = 16


def ramp_chunk(h=H, joints=2):
    """Waypoint k has value k on every joint (so values read as step indices)."""
    return np.repeat(np.arange(h, dtype=float)[:, None], joints, axis=1)


def trajectory(t, offset=0.0):
    """A smooth 3-joint reference trajectory (max speed about 1 unit/s)."""
    t = np.asarray(t, dtype=float)[..., None]
    return np.sin(np.array([1.0, 0.7, 0.4]) * t + np.array([0.0, 1.0, 2.0])) + offset


def chunk_of(t0, offset=0.0, h=H, dt=DT):
    return trajectory(t0 + dt * np.arange(h), offset)


def test_parameter_validation():
    for kwargs, field in (({'dt': 0.0}, 'dt'), ({'dt': math.nan}, 'dt'),
                          ({'dt': DT, 'blend_time_s': -0.1}, 'blend_time_s'),
                          ({'dt': DT, 'interpolation': 'quadratic'}, 'interpolation'),
                          ({'dt': DT, 'num_joints': 0}, 'num_joints')):
        with pytest.raises(ValueError, match=field):
            ChunkScheduler(**kwargs)
    sched = ChunkScheduler(DT)
    with pytest.raises(ValueError, match='unknown'):
        sched.set_params(rate=3)


def test_rejects_malformed_chunks_and_times():
    sched = ChunkScheduler(DT, num_joints=2)
    with pytest.raises(ValueError, match='H x J'):
        sched.push(np.zeros(5), 0.0, 0.0)
    with pytest.raises(ValueError, match='H x J'):
        sched.push(np.zeros((0, 2)), 0.0, 0.0)
    with pytest.raises(ValueError, match='2 joints'):
        sched.push(np.zeros((5, 3)), 0.0, 0.0)
    bad = np.zeros((5, 2))
    bad[3, 1] = math.nan
    with pytest.raises(ValueError, match=r'NaN/Inf in waypoints \[3\]'):
        sched.push(bad, 0.0, 0.0)
    with pytest.raises(ValueError, match='t0'):
        sched.push(np.zeros((5, 2)), math.nan, 0.0)
    with pytest.raises(ValueError, match='now_s'):
        sched.push(np.zeros((5, 2)), 0.0, math.inf)
    with pytest.raises(ValueError, match='dt'):
        sched.push(np.zeros((5, 2)), 0.0, 0.0, dt=-0.1)
    assert sched.sample(0.0) is None  # nothing was accepted


def test_rejects_out_of_order_chunks_and_accepts_equal_t0():
    sched = ChunkScheduler(DT)
    sched.push(ramp_chunk(), 1.0, 1.0)
    with pytest.raises(ValueError, match='out of order'):
        sched.push(ramp_chunk(), 0.9, 1.05)
    assert sched.t0 == 1.0
    sched.push(ramp_chunk() + 1.0, 1.0, 1.05)
    assert sched.t0 == 1.0


def test_infers_joint_count_from_the_first_chunk():
    sched = ChunkScheduler(DT)
    sched.push(ramp_chunk(joints=3), 0.0, 0.0)
    assert sched.num_joints == 3
    with pytest.raises(ValueError, match='3 joints'):
        sched.push(ramp_chunk(joints=2), 0.1, 0.1)


@pytest.mark.parametrize('interpolation', ['linear', 'cubic'])
def test_interpolation_is_exact_at_waypoints(interpolation):
    sched = ChunkScheduler(DT, interpolation=interpolation)
    chunk = chunk_of(2.0)
    sched.push(chunk, 2.0, 2.0)
    for k in range(H):
        np.testing.assert_allclose(sched.sample(2.0 + k * DT), chunk[k], atol=1e-12)


def test_linear_midpoints_and_cubic_smoothness():
    linear, cubic = ChunkScheduler(DT), ChunkScheduler(DT, interpolation='cubic')
    straight = np.linspace(0.0, 1.5, H)[:, None] * np.array([1.0, -2.0, 0.5])
    for sched in (linear, cubic):
        sched.push(straight, 0.0, 0.0)
        # both reproduce a straight line exactly between waypoints
        np.testing.assert_allclose(sched.sample(0.35), 0.35 * np.array([1.0, -2.0, 0.5]))
    linear.push(chunk_of(1.0), 1.0, 1.0)
    cubic.push(chunk_of(1.0), 1.0, 1.0)
    mids = 1.0 + DT * (np.arange(2, H - 3) + 0.5)
    err_linear = max(np.abs(linear.sample(t) - trajectory(t)).max() for t in mids)
    err_cubic = max(np.abs(cubic.sample(t) - trajectory(t)).max() for t in mids)
    assert err_cubic < 0.1 * err_linear


def test_latency_compensation_samples_the_chunk_at_now():
    sched = ChunkScheduler(DT, blend_time_s=0.0)
    # the model needed 0.35 s: waypoints 0..3 are already in the past
    skipped = sched.push(ramp_chunk(), t0=10.0, now_s=10.35)
    assert skipped == 4
    assert sched.last_latency_s == pytest.approx(0.35)
    np.testing.assert_allclose(sched.sample(10.35), [3.5, 3.5])  # not waypoint 0
    np.testing.assert_allclose(sched.sample(10.6), [6.0, 6.0])
    assert sched.remaining(10.35) == pytest.approx((H - 1) * DT - 0.35)


def test_chunk_entirely_in_the_past_is_dropped_and_the_current_one_kept():
    sched = ChunkScheduler(DT)
    sched.push(ramp_chunk(), 0.0, 0.0)
    assert sched.push(ramp_chunk(4) + 100.0, 0.5, 1.0) == 4
    assert sched.t0 == 0.0
    np.testing.assert_allclose(sched.sample(1.0), [10.0, 10.0])


def test_run_out_and_empty_return_none():
    sched = ChunkScheduler(DT)
    assert sched.sample(0.0) is None
    assert sched.remaining(0.0) == 0.0
    sched.push(ramp_chunk(), 0.0, 0.0)
    end = (H - 1) * DT
    np.testing.assert_allclose(sched.sample(end), [H - 1.0, H - 1.0])
    assert sched.sample(end + 1e-3) is None
    assert sched.remaining(end + 1.0) == 0.0
    sched.reset()
    assert sched.sample(0.5) is None and sched.t0 is None


def test_chunk_from_the_future_holds_its_first_waypoint():
    sched = ChunkScheduler(DT)
    sched.push(ramp_chunk() + 1.0, 5.0, 4.9)
    np.testing.assert_allclose(sched.sample(4.95), [1.0, 1.0])


def max_step_across_switch(blend_time_s, offset, interpolation='cubic', period=1e-3):
    """Follow chunk A, switch to a disagreeing chunk B at t=1.0; return max |delta|."""
    sched = ChunkScheduler(DT, blend_time_s=blend_time_s, interpolation=interpolation)
    sched.push(chunk_of(0.8), 0.8, 0.85)
    times = np.arange(0.85, 1.6, period)
    out, pushed = [], False
    for t in times:
        if not pushed and t >= 1.0:
            sched.push(chunk_of(0.9, offset), 0.9, t)  # computed from an older observation
            pushed = True
        out.append(sched.sample(t))
    return np.abs(np.diff(np.array(out), axis=0)).max()


@pytest.mark.parametrize('interpolation', ['linear', 'cubic'])
def test_blending_removes_the_jump_at_a_chunk_switch(interpolation):
    period, offset, blend = 1e-3, 0.2, 0.1
    speed = 1.0  # the reference trajectory moves at most 1 unit/s per joint
    jumpy = max_step_across_switch(0.0, offset, interpolation, period)
    smooth = max_step_across_switch(blend, offset, interpolation, period)
    assert jumpy >= 0.9 * offset  # without blending the whole disagreement arrives at once
    # with it: the trajectory's own motion plus the crossfade (smoothstep slope <= 1.5)
    assert smooth <= speed * period + 1.5 * offset * period / blend + 1e-4
    assert smooth < 0.05 * jumpy


def test_rapid_pushes_stay_continuous_and_settle_on_the_newest_chunk():
    sched = ChunkScheduler(DT, blend_time_s=0.1, interpolation='cubic')
    rng = np.random.default_rng(2)
    period, t, next_push = 1e-3, 0.0, 0.0
    out = []
    while t < 2.0:
        if t >= next_push:
            # 30 Hz chunks, 20-50 ms inference latency, each disagreeing a little
            t0 = t - rng.uniform(0.02, 0.05)
            sched.push(chunk_of(t0, rng.normal(0.0, 0.05, 3)), t0, t)
            next_push = t + 1 / 30
        out.append(sched.sample(t))
        t += period
    steps = np.abs(np.diff(np.array(out), axis=0)).max()
    assert steps < 0.01  # vs ~0.05-0.15 jumps without blending
    # once the blend is over, the output is exactly the newest chunk
    last = chunk_of(1.99, 0.3)
    sched.push(last, 1.99, 2.0)
    alone = ChunkScheduler(DT, blend_time_s=0.0, interpolation='cubic')
    alone.push(last, 1.99, 2.0)
    assert not np.allclose(sched.sample(2.05), alone.sample(2.05))  # still blending here
    np.testing.assert_allclose(sched.sample(2.2), alone.sample(2.2), atol=1e-12)
