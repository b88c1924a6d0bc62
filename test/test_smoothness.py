"""Step and switch-jerk metrics of a command stream (dial_ros.evaluate.smoothness)."""
import numpy as np
import pytest

from dial_ros.evaluate.smoothness import (command_smoothness, summarize_smoothness,
                                          switch_indices)

RATE = 200.0


def ramp(n=200, joints=3, speed=0.5):
    t = np.arange(n) / RATE
    return np.outer(t, speed * np.arange(1, joints + 1))


def test_a_constant_velocity_stream_has_no_jerk():
    s = command_smoothness(ramp(), RATE, switches=[50, 120])
    assert s['switches'] == 2 and s['commands'] == 200
    assert s['max_step_rad'] == pytest.approx(1.5 / RATE)
    assert s['switch_jerk_max'] == pytest.approx(0.0, abs=1e-6)


def test_a_jump_at_a_switch_shows_as_step_and_jerk_there_only():
    q = ramp()
    q[120:, 1] += 0.01       # the new chunk starts 0.01 rad away: a step at command 120
    q[90:, 0] += 0.004       # a smaller jump far from any switch
    s = command_smoothness(q, RATE, switches=[50, 120], window_s=0.05)
    assert s['max_step_rad'] == pytest.approx(0.01 + 1.0 / RATE)
    assert s['switch_step_max_rad'] == pytest.approx(0.01 + 1.0 / RATE)
    # the third difference of a step h is (h, -2h, h): 2h * rate^3 at most
    assert s['switch_jerk_max'] == pytest.approx(2 * 0.01 * RATE ** 3)
    only_far = command_smoothness(q, RATE, switches=[50])
    assert only_far['switch_jerk_max'] == pytest.approx(0.0, abs=1e-6)
    assert only_far['switch_step_max_rad'] == pytest.approx(1.5 / RATE)


def test_switch_indices_and_summary():
    assert switch_indices([0.0, 0.005, 0.010, 0.015], [0.004, 0.010, 1.0]) == [1, 2, 4]
    a = command_smoothness(ramp(), RATE, [50])
    q = ramp()
    q[100:, 0] += 0.01
    b = command_smoothness(q, RATE, [100])
    total = summarize_smoothness([{'smoothness': a}, {'smoothness': b}, {'smoothness': None}])
    assert total['switches'] == 2
    assert total['switch_jerk_max'] == pytest.approx(b['switch_jerk_max'])
    assert total['max_step_rad'] == pytest.approx(b['max_step_rad'])


def test_bad_input_is_named():
    with pytest.raises(ValueError, match='commands'):
        command_smoothness(np.zeros(5), RATE, [])
    with pytest.raises(ValueError, match='rate_hz'):
        command_smoothness(ramp(), 0.0, [])


def test_evaluate_param_overrides_are_checked():
    from dial_ros.evaluate.__main__ import parse_params
    assert parse_params(['controller.chunk_transition=rtc', 'controller.rtc_max_guidance=3',
                         'sim.seed=5']) == {
        'controller': {'chunk_transition': 'rtc', 'rtc_max_guidance': 3}, 'sim': {'seed': 5}}
    for bad, message in (('controller.chunk_transition', 'node.name=value'),
                         ('chunk_transition=rtc', 'node.name=value'),
                         ('controller.no_such=1', 'not a parameter')):
        with pytest.raises(ValueError, match=message):
            parse_params([bad])
