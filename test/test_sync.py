"""Tests for the approximate-time synchroniser and the rate monitor (no ROS needed)."""
import math

import numpy as np
import pytest

from dial_ros.core.sync import ApproximateTimeSync, RateMonitor


def test_matches_within_slop_and_calls_back():
    got = []
    sync = ApproximateTimeSync(2, queue_size=5, slop_s=0.05, callback=got.append)
    assert sync.add(0, 1.00, 'image') is None
    assert sync.add(1, 1.02, 'joints') == ('image', 'joints')
    assert got == [('image', 'joints')]
    assert sync.queued() == [0, 0]


def test_no_match_outside_slop():
    sync = ApproximateTimeSync(2, queue_size=5, slop_s=0.05)
    sync.add(0, 1.00, 'a')
    assert sync.add(1, 1.06, 'b') is None
    assert sync.queued() == [1, 1]
    # a later item on stream 0 pairs with the waiting one on stream 1
    assert sync.add(0, 1.04, 'c') == ('c', 'b')


def test_three_streams_need_all_three():
    sync = ApproximateTimeSync(3, queue_size=5, slop_s=0.02)
    assert sync.add(0, 2.000, 'a') is None
    assert sync.add(2, 2.010, 'c') is None
    assert sync.add(1, 2.015, 'b') == ('a', 'b', 'c')


def test_picks_tightest_set_and_drops_older_items():
    sync = ApproximateTimeSync(2, queue_size=5, slop_s=0.06)
    sync.add(0, 0.95, 'old')
    sync.add(0, 0.99, 'close')
    assert sync.add(1, 1.00, 'pivot') == ('close', 'pivot')
    # 'old' was older than the match: it can never form a later set, so it is gone
    assert sync.queued() == [0, 0]


def test_tightest_set_over_three_streams():
    sync = ApproximateTimeSync(3, queue_size=5, slop_s=0.05)
    sync.add(0, 0.96, 'a0')
    sync.add(0, 1.03, 'a1')
    sync.add(1, 1.04, 'b1')
    # candidate sets with the pivot 1.00: (0.96, 1.04) spread 0.08 (invalid), (1.03, 1.04)
    assert sync.add(2, 1.00, 'c') == ('a1', 'b1', 'c')


def test_emitted_sets_are_increasing_in_time():
    # message_filters' Python version keeps a0 after the first match and later emits
    # (a0, b1, c1): an older camera frame after a newer one. Here older items leave.
    sync = ApproximateTimeSync(3, queue_size=5, slop_s=0.05)
    sync.add(0, 1.00, 'a0')
    sync.add(1, 1.04, 'b0')
    sync.add(0, 1.03, 'a1')
    sync.add(1, 1.05, 'b1')
    assert sync.add(2, 1.045, 'c0') == ('a1', 'b0', 'c0')
    assert sync.queued() == [0, 1, 0]
    assert sync.add(2, 1.047, 'c1') is None


def test_queue_overflow_drops_oldest():
    sync = ApproximateTimeSync(2, queue_size=2, slop_s=0.01)
    for stamp in (1.0, 1.1, 1.2):
        sync.add(0, stamp, stamp)
    assert sync.queued() == [2, 0]
    assert sync.stats['dropped'] == 1
    assert sync.add(1, 1.0, 'late') is None  # its partner 1.0 was dropped
    assert sync.add(1, 1.1, 'ok') == (1.1, 'ok')


def test_rejects_out_of_order_duplicate_and_non_finite_stamps():
    sync = ApproximateTimeSync(2, queue_size=5, slop_s=0.05)
    sync.add(0, 2.0, 'a')
    with pytest.raises(ValueError, match='out of order'):
        sync.add(0, 1.9, 'older')
    with pytest.raises(ValueError, match='duplicate'):
        sync.add(0, 2.0, 'same')
    for bad in (math.nan, math.inf, 'soon', None):
        with pytest.raises(ValueError, match='stamp_s'):
            sync.add(0, bad, 'x')
    assert sync.stats['rejected'] == 2
    assert sync.queued() == [1, 0]
    # the other stream is independent
    assert sync.add(1, 1.99, 'b') == ('a', 'b')


def test_rejects_bad_stream_index_and_configuration():
    sync = ApproximateTimeSync(2, queue_size=5, slop_s=0.05)
    for index in (-1, 2, 1.0):
        with pytest.raises(ValueError, match='stream_index'):
            sync.add(index, 1.0, 'x')
    with pytest.raises(ValueError, match='num_streams'):
        ApproximateTimeSync(0, 5, 0.05)
    with pytest.raises(ValueError, match='queue_size'):
        ApproximateTimeSync(2, 0, 0.05)
    with pytest.raises(ValueError, match='slop_s'):
        ApproximateTimeSync(2, 5, -0.01)
    with pytest.raises(ValueError, match='slop_s'):
        ApproximateTimeSync(2, 5, math.nan)


def test_zero_slop_is_exact_matching():
    sync = ApproximateTimeSync(2, queue_size=5, slop_s=0.0)
    sync.add(0, 1.0, 'a')
    assert sync.add(1, 1.0 + 1e-6, 'b') is None
    sync.add(0, 2.0, 'c')
    assert sync.add(1, 2.0, 'd') == ('c', 'd')


def test_reset_accepts_a_clock_that_went_back():
    sync = ApproximateTimeSync(2, queue_size=5, slop_s=0.05)
    sync.add(0, 100.0, 'a')
    sync.reset()
    sync.add(0, 1.0, 'a')
    assert sync.add(1, 1.0, 'b') == ('a', 'b')


def test_jittered_streams_match_within_slop_in_order():
    rng = np.random.default_rng(0)
    slop = 0.01
    sync = ApproximateTimeSync(3, queue_size=10, slop_s=slop)
    frames = 200
    events = []
    for i, (rate, offset) in enumerate(((30.0, 0.0), (30.0, 0.003), (30.0, -0.002))):
        stamps = offset + np.arange(frames) / rate + rng.uniform(-0.002, 0.002, frames)
        # arrival = stamp + transport delay; order across streams varies, per stream kept
        arrivals = stamps + rng.uniform(0.0, 0.05, frames)
        arrivals = np.maximum.accumulate(arrivals)
        events += [(a, i, s) for a, s in zip(arrivals, stamps)]
    matched = []
    for _, stream, stamp in sorted(events):
        out = sync.add(stream, stamp, stamp)
        if out is not None:
            matched.append(out)
    assert len(matched) >= 0.95 * frames
    sets = np.array(matched)
    assert np.all(sets.max(axis=1) - sets.min(axis=1) <= slop)
    assert np.all(np.diff(sets, axis=0) > 0)


def test_rate_monitor_reports_achieved_rate():
    monitor = RateMonitor(30.0, window_s=1.0, min_fraction=0.8)
    for k in range(90):
        monitor.tick(k / 30.0)
    ok, rate, reason = monitor.check(89 / 30.0)
    assert ok and reason == 'ok'
    assert rate == pytest.approx(30.0, rel=0.05)


def test_rate_monitor_flags_a_slow_stream():
    monitor = RateMonitor(30.0, window_s=1.0, min_fraction=0.8)
    for k in range(60):
        monitor.tick(k / 20.0)
    ok, rate, reason = monitor.check(59 / 20.0)
    assert not ok
    assert rate == pytest.approx(20.0, rel=0.05)
    assert 'below' in reason


def test_rate_monitor_flags_a_stall_after_the_window():
    monitor = RateMonitor(30.0, window_s=1.0)
    for k in range(61):
        monitor.tick(k / 30.0)
    assert monitor.check(2.0 + 0.05)[0]  # one late frame is not a slow stream
    ok, rate, _ = monitor.check(2.6)
    assert not ok and rate < 24.0
    ok, rate, _ = monitor.check(3.5)
    assert not ok and rate == 0.0


def test_rate_monitor_start_up_and_validation():
    monitor = RateMonitor(10.0, window_s=1.0)
    assert monitor.check(0.0) == (False, None, 'no messages')
    monitor.tick(0.0)
    ok, rate, reason = monitor.check(0.5)
    assert ok and rate is None and reason == 'warming up'
    monitor.tick(5.0)
    monitor.tick(1.0)  # clock went back (bag loop): restart instead of a negative period
    assert monitor.count == 1
    with pytest.raises(ValueError, match='expected_hz'):
        RateMonitor(0.0)
    with pytest.raises(ValueError, match='window_s'):
        RateMonitor(1.0, window_s=1.0)
    with pytest.raises(ValueError, match='min_fraction'):
        RateMonitor(30.0, min_fraction=1.5)
    with pytest.raises(ValueError, match='t_s'):
        monitor.tick(math.nan)
