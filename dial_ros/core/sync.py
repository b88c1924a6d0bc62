"""Approximate-time synchronisation of N stamped streams, and a rate monitor.

Algorithm: the rule of message_filters' Python ``ApproximateTimeSynchronizer`` (what rclpy
users get): one bounded queue per stream keyed by header stamp, the oldest item dropped on
overflow, and each arriving item is the pivot: a set is emitted as soon as one exists that
contains the new item, one item per stream, with max(stamp) - min(stamp) <= slop. It is
chosen over the C++ ApproximateTime "pivot" policy because that policy must wait for a later
message to prove a set optimal, which adds a frame of latency to every observation the
controller acts on; here a set goes out on the arrival that completes it.

Deliberate differences from the Python original, each for the control loop's sake:

* among the valid sets with the new item, the one with the smallest spread is emitted
  (ties: the newest), found by a sweep instead of the first hit of ``itertools.product``,
  which is exponential in N and order-dependent;
* after a match, the matched items *and everything older* leave the queues, so emitted sets
  are strictly increasing in time (the original can emit an older set after a newer one);
* the spread test is inclusive (``<= slop``), so ``slop=0`` gives exact-time matching;
* out-of-order, duplicate and non-finite stamps are rejected with ValueError.
"""
import bisect
import collections
import logging
import math
import threading

from dial_ros.core.checks import finite_number

LOGGER = logging.getLogger(__name__)


class ApproximateTimeSync:
    """Match items from ``num_streams`` streams whose stamps lie within ``slop_s``.

    ``callback(items)`` receives a tuple with one item per stream, in stream order; ``add``
    also returns that tuple (or None), so the synchroniser can be used without a callback.
    Thread-safe; the callback runs under the (re-entrant) lock, like message_filters.
    """

    def __init__(self, num_streams, queue_size, slop_s, callback=None):
        if not isinstance(num_streams, int) or num_streams < 1:
            raise ValueError(f'num_streams: expected an int >= 1, got {num_streams!r}')
        if not isinstance(queue_size, int) or queue_size < 1:
            raise ValueError(f'queue_size: expected an int >= 1, got {queue_size!r}')
        slop_s = finite_number(slop_s, 'slop_s')
        if slop_s < 0:
            raise ValueError(f'slop_s: must be >= 0, got {slop_s}')
        self.num_streams = num_streams
        self.queue_size = queue_size
        self.slop_s = slop_s
        self.callback = callback
        self._lock = threading.RLock()
        self.reset()

    def reset(self):
        """Forget queued items and last stamps (e.g. when sim time or a bag loops back)."""
        with self._lock:
            # per stream: sorted stamps and the items in the same order
            self._stamps = [[] for _ in range(self.num_streams)]
            self._items = [[] for _ in range(self.num_streams)]
            self._last = [-math.inf] * self.num_streams
            self.stats = collections.Counter()

    def add(self, stream_index, stamp_s, item):
        """Queue ``item`` stamped ``stamp_s`` on one stream; return the matched set or None.

        Raises ValueError for an unknown stream, a non-finite stamp, or a stamp not newer
        than the last one accepted on that stream (out of order or duplicate).
        """
        if not isinstance(stream_index, int) or not 0 <= stream_index < self.num_streams:
            raise ValueError(f'stream_index: expected 0..{self.num_streams - 1}, '
                             f'got {stream_index!r}')
        stamp = finite_number(stamp_s, 'stamp_s')
        with self._lock:
            last = self._last[stream_index]
            if stamp <= last:
                self.stats['rejected'] += 1
                kind = 'duplicate' if stamp == last else 'out of order'
                raise ValueError(f'stamp_s: {kind} on stream {stream_index}: {stamp:.9f} is '
                                 f'not newer than the last accepted {last:.9f}')
            self._last[stream_index] = stamp
            stamps, items = self._stamps[stream_index], self._items[stream_index]
            stamps.append(stamp)
            items.append(item)
            if len(stamps) > self.queue_size:
                del stamps[0], items[0]
                self.stats['dropped'] += 1
            chosen = self._best_set(stream_index, stamp)
            if chosen is None:
                return None
            matched = tuple(self._items[i][k] for i, k in enumerate(chosen))
            for i, k in enumerate(chosen):
                del self._stamps[i][:k + 1], self._items[i][:k + 1]
            self.stats['matched'] += 1
            if self.callback is not None:
                self.callback(matched)
            return matched

    def _best_set(self, pivot_stream, pivot):
        """Queue indices (one per stream) of the tightest set that includes the pivot."""
        lo = pivot - self.slop_s
        # the set's minimum stamp is one of the candidates in [pivot - slop, pivot]
        lows = {pivot}
        for i, stamps in enumerate(self._stamps):
            if i != pivot_stream:
                lows.update(s for s in stamps[bisect.bisect_left(stamps, lo):]
                            if s <= pivot)
        best, best_key = None, None
        for low in sorted(lows):
            chosen, high = [], pivot
            for i, stamps in enumerate(self._stamps):
                if i == pivot_stream:
                    chosen.append(len(stamps) - 1)
                    continue
                # for a fixed lower bound, the earliest stamp >= low minimises the maximum
                k = bisect.bisect_left(stamps, low)
                if k == len(stamps) or stamps[k] - low > self.slop_s:
                    break
                chosen.append(k)
                high = max(high, stamps[k])
            else:
                spread = high - min(self._stamps[i][k] for i, k in enumerate(chosen))
                if spread <= self.slop_s and (best_key is None or spread <= best_key):
                    best, best_key = chosen, spread
        return best

    def queued(self):
        """Return the number of items waiting, per stream."""
        with self._lock:
            return [len(s) for s in self._stamps]


class RateMonitor:
    """Achieved rate of one stream against its expected rate, over a sliding time window.

    Call ``tick(t)`` on each arrival (receive time on the monitoring clock) and ``check(now)``
    for diagnostics. The rate is (n - 1) / (now - first tick in the window): it needs no
    quantisation to whole counts and decays while the stream is stalled, so a dead camera is
    reported as slow once the window has passed, without any separate timeout.
    """

    def __init__(self, expected_hz, window_s=1.0, min_fraction=0.8):
        expected_hz = finite_number(expected_hz, 'expected_hz')
        if expected_hz <= 0:
            raise ValueError(f'expected_hz: must be > 0, got {expected_hz}')
        window_s = finite_number(window_s, 'window_s')
        if window_s * expected_hz < 2:
            raise ValueError(f'window_s: must span at least two expected periods '
                             f'({2 / expected_hz:.3f} s), got {window_s}')
        min_fraction = finite_number(min_fraction, 'min_fraction')
        if not 0 < min_fraction <= 1:
            raise ValueError(f'min_fraction: must be in (0, 1], got {min_fraction}')
        self.expected_hz = expected_hz
        self.window_s = window_s
        self.min_fraction = min_fraction
        self.reset()

    def reset(self):
        """Forget all ticks."""
        self._ticks = collections.deque()
        self._first = None
        self.count = 0

    def tick(self, t_s):
        """Record one arrival at ``t_s``; a clock that jumps back restarts the window."""
        t = finite_number(t_s, 't_s')
        if self._ticks and t < self._ticks[-1]:
            LOGGER.info('RateMonitor: time went back (%.3f < %.3f); restarting', t,
                        self._ticks[-1])
            self.reset()
        if self._first is None:
            self._first = t
        self._ticks.append(t)
        self.count += 1

    def rate_hz(self, now_s):
        """Achieved rate at ``now_s``, or None before two arrivals have been seen."""
        now = finite_number(now_s, 'now_s')
        while self._ticks and self._ticks[0] <= now - self.window_s:
            self._ticks.popleft()
        if self._first is None or self.count < 2:
            return None
        if len(self._ticks) < 2:
            return 0.0
        span = max(now, self._ticks[-1]) - self._ticks[0]
        return (len(self._ticks) - 1) / max(span, 1e-9)

    def check(self, now_s):
        """Return ``(ok, rate_hz, reason)``; ``ok`` is False when the rate has fallen below.

        A stream is judged only once a full window has passed since its first arrival; a
        stream that never arrived is reported as not ok with reason 'no messages'.
        """
        rate = self.rate_hz(now_s)
        if self._first is None:
            return False, None, 'no messages'
        if now_s - self._first < self.window_s:
            return True, rate, 'warming up'
        rate = rate or 0.0
        threshold = self.min_fraction * self.expected_hz
        if rate < threshold:
            return False, rate, (f'rate {rate:.1f} Hz below {threshold:.1f} Hz '
                                 f'({self.min_fraction:.0%} of {self.expected_hz:g} Hz)')
        return True, rate, 'ok'
