"""The surprise core (dial_ros/core/surprise.py): normalisation, floor, stamp matching, limits.

No ROS: plain NumPy on (tokens, dim) arrays, stamps in seconds.
"""
import numpy as np
import pytest

from dial_ros.core.surprise import ErrorRun, SurpriseMonitor, check_thresholds, level, score

SHAPE = (64, 64)
PERIOD = 0.05


def frames(seed=0, step=1.0):
    """Current and future tokens of a moving scene: future = current + a change of ``step``."""
    rng = np.random.default_rng(seed)
    current = rng.standard_normal(SHAPE)
    return current, current + step * rng.standard_normal(SHAPE)


def test_copy_current_frame_scores_one_and_perfect_foresight_zero():
    current, future = frames()
    value, cosine, mse, copy_mse, _ = score(current, current, future)
    assert value == pytest.approx(1.0)
    assert mse == pytest.approx(copy_mse) and copy_mse > 0
    value, cosine, mse, _, _ = score(future, current, future)
    assert value == 0.0 and mse == 0.0 and cosine == pytest.approx(1.0)


def test_surprise_is_the_error_ratio_to_the_copy_baseline():
    current, future = frames()
    # foresight that moves the wrong way: error (1 - k)^2 times the copy error, k = -1 -> 4
    wrong = current - (future - current)
    assert score(wrong, current, future)[0] == pytest.approx(4.0)
    half = current + 0.5 * (future - current)
    assert score(half, current, future)[0] == pytest.approx(0.25)


def test_still_scene_uses_the_floor_instead_of_a_zero_copy_error():
    current, _ = frames()
    foresight = current + 0.1 * np.random.default_rng(1).standard_normal(SHAPE)
    value, _, mse, copy_mse, token_var = score(foresight, current, current, floor_fraction=0.05)
    assert copy_mse == 0.0
    assert value == pytest.approx(mse / (0.05 * token_var))
    assert np.isfinite(value)
    # even with no floor at all the ratio stays finite (the smallest float guards it)
    assert np.isfinite(score(foresight, current, current, floor_fraction=0.0)[0])


def test_bad_tensors_are_named():
    current, future = frames()
    with pytest.raises(ValueError, match='foresight: shape'):
        score(current[:10], current, future)
    bad = future.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match='future: contains NaN'):
        score(current, current, bad)


def test_thresholds_and_levels():
    assert [level(v, 2.0, 4.0) for v in (1.0, 2.0, 3.9, 4.0)] == ['OK', 'WARN', 'WARN', 'ERROR']
    # the relative error rule: ERROR whatever the surprise, unless it is off (0)
    assert level(1.0, 2.0, 4.0, relative_mse=0.6, relative_error=0.5) == 'ERROR'
    assert level(1.0, 2.0, 4.0, relative_mse=0.4, relative_error=0.5) == 'OK'
    assert level(1.0, 2.0, 4.0, relative_mse=9.0, relative_error=0.0) == 'OK'
    with pytest.raises(ValueError, match='error_threshold .* greater than warn_threshold'):
        check_thresholds(3.0, 3.0)
    with pytest.raises(ValueError, match='warn_threshold: must be > 0'):
        check_thresholds(0.0, 1.0)
    with pytest.raises(ValueError, match='tolerance_s'):
        SurpriseMonitor(PERIOD, PERIOD)


@pytest.mark.parametrize('order', ['intent_first', 'frames_first', 'target_first'])
def test_monitor_pairs_an_intent_with_the_frame_its_horizon_points_at(order):
    """Horizon 16 at 20 Hz: intent stamped t is compared with the frame stamped t + 0.8 s."""
    monitor = SurpriseMonitor(PERIOD, 0.02, warn=2.0, error=3.0, relative_error=0.0)
    rng = np.random.default_rng(0)
    t0 = 100.0
    # frames every period with a little stamp jitter, as the sim's wall-clock stamps have
    stamps = [t0 + k * PERIOD + rng.uniform(-0.005, 0.005) for k in range(18)]
    stamps[0] = t0
    tokens = [rng.standard_normal(SHAPE) for _ in stamps]
    wrong = tokens[0] - (tokens[16] - tokens[0])  # surprise 4 against frame 16
    results = []
    if order == 'intent_first':
        results += monitor.add_intent(t0, wrong, 16)
    feed = list(zip(stamps, tokens))
    if order == 'target_first':
        feed = feed[16:17] + feed[:16] + feed[17:]
    for stamp, tok in feed:
        results += monitor.add_observation(stamp, tok)
    if order != 'intent_first':
        results += monitor.add_intent(t0, wrong, 16)
    assert len(results) == 1
    result = results[0]
    assert result.stamp == t0 and result.target_stamp == stamps[16]
    assert result.surprise == pytest.approx(4.0) and result.level == 'ERROR'
    assert result.relative_mse == pytest.approx(result.mse / result.token_var)
    assert monitor.counts['scored'] == 1


def test_monitor_drops_intents_whose_target_frame_never_came_and_stays_bounded():
    monitor = SurpriseMonitor(PERIOD, 0.02, max_frames=20, max_pending=4)
    current, _ = frames()
    monitor.add_observation(0.0, current)
    assert monitor.add_intent(0.0, current, 2) == []
    monitor.add_observation(0.05, current)
    # frame 2 (0.10 s) was dropped; 0.15 s is past its tolerance: the intent is given up
    assert monitor.add_observation(0.15, current) == []
    assert monitor.counts['target_missed'] == 1
    for k in range(4, 100):
        monitor.add_observation(k * PERIOD, current)
        monitor.add_intent(k * PERIOD, current, 50)
    assert len(monitor._stamps) == 20 and len(monitor._pending) <= 4
    assert monitor.counts['pending_overflow'] > 0
    # a horizon longer than the frames kept: its own observation is gone when the target
    # comes, so it cannot be normalised (counted, not scored)
    short = SurpriseMonitor(PERIOD, 0.02, max_frames=5)
    short.add_intent(0.0, current, 10)
    assert sum(len(short.add_observation(k * PERIOD, current)) for k in range(11)) == 0
    assert short.counts['no_current_frame'] == 1
    with pytest.raises(ValueError, match='horizon'):
        monitor.add_intent(5.0, current, 0)


def test_an_intent_that_cannot_be_compared_is_dropped_with_its_reason():
    monitor = SurpriseMonitor(PERIOD, 0.02)
    current, future = frames()
    assert monitor.add_intent(0.0, current[:, :8], 1) == []  # queued: no frames yet
    monitor.add_observation(0.0, current)
    assert monitor.add_observation(PERIOD, future) == []  # compared now, and refused
    assert monitor.counts['bad_tensor'] == 1
    assert 'foresight: shape (64, 8) does not match' in monitor.last_error
    assert len(monitor.add_intent(0.0, current, 1)) == 1  # a good one still scores


def test_error_run_counts_unbroken_errors_on_the_intent_stamps():
    run = ErrorRun(max_gap_s=1.0)
    assert run.update(10.0, False) == 0.0
    assert run.update(10.2, True) == 0.0
    assert run.update(10.6, True) == pytest.approx(0.4)
    assert run.update(10.8, False) == 0.0           # a calmer score ends the run
    assert run.update(11.0, True) == 0.0
    assert run.update(11.8, True) == pytest.approx(0.8)
    assert run.update(13.0, True) == 0.0            # 1.2 s without a score: a new run
    assert run.update(12.5, True) == 0.0            # stamps going back: a new run too
