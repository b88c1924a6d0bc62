"""A dedicated thread that calls ``tick()`` at a fixed rate up to 1 kHz, and its period stats.

Why not an rclpy timer: measured here, a 1 kHz rclpy timer costs ~27 % of a core and its
period jitters with the executor's load. This thread schedules by absolute deadlines on
``time.perf_counter``: it sleeps until ``SPIN_MARGIN_S`` before the deadline (a Linux sleep
overshoots by ~70-90 us here) and spins the rest, so one late tick does not shift all later
ones. When a deadline has passed by more than one period, the periods in between count as
missed and the schedule re-anchors: a burst of catch-up commands is worse than a gap.

The rate changes live (:meth:`CommandStream.set_rate`); the stats restart with it. With a
``priority`` (1-99) the thread asks for SCHED_FIFO, as ros2_control's controller manager does:
then other processes on a loaded machine no longer delay it. The GIL still can: a thread of
the same process that holds it and is preempted by another process stalls the stream until
it runs again (priority inversion; measured: p99 12 ms at 200 Hz with sim, perception and
intent on 2 cores). :func:`set_process_priority` lifts the process's other threads to a
lower SCHED_FIFO priority, which removes that (p99 1 ms at 200 Hz, 0.3 ms at 1 kHz).
"""
import array
import logging
import os
import threading
import time

import numpy as np

LOG = logging.getLogger(__name__)

SPIN_MARGIN_S = 0.0003   # sleep overshoot p99 here is ~0.09 ms; waking from it needs the GIL
MAX_SLEEP_S = 0.05       # sleep in slices so stop() and set_rate() act promptly at low rates


def _set_fifo(tid, priority):
    policy = os.SCHED_FIFO if priority > 0 else os.SCHED_OTHER
    os.sched_setscheduler(tid, policy, os.sched_param(priority))


def set_process_priority(priority, exclude=()):
    """Put every thread of this process except ``exclude`` (native ids) at SCHED_FIFO.

    0 restores normal scheduling. Threads started later inherit the creating thread's policy.
    Raises OSError (PermissionError without CAP_SYS_NICE / an rtprio limit).
    """
    for name in os.listdir('/proc/self/task'):
        tid = int(name)
        if tid not in exclude:
            try:
                _set_fifo(tid, priority)
            except ProcessLookupError:  # the thread ended meanwhile
                pass


class PeriodStats:
    """Tick periods and busy times in a ring buffer: achieved rate, jitter, missed ticks.

    Jitter is ``|period - target period|``. ``window()`` covers the ticks since its previous
    call (diagnostics, ~1 s); ``total()`` covers everything since ``reset()`` (up to
    ``capacity`` ticks). Written by the stream thread, read by others: guarded by a lock.
    """

    def __init__(self, target_period_s, capacity=1 << 18):
        self._lock = threading.Lock()
        self._periods = np.zeros(capacity)
        self._busy = np.zeros(capacity)
        self.reset(target_period_s)

    def reset(self, target_period_s):
        with self._lock:
            self.target_period_s = float(target_period_s)
            self._count = 0            # periods recorded since reset
            self._window_start = 0
            self.missed = 0
            self._window_missed = 0
            self.started = time.monotonic()

    def record(self, period_s, busy_s):
        with self._lock:
            i = self._count % self._periods.size
            self._periods[i], self._busy[i] = period_s, busy_s
            self._count += 1

    def add_missed(self, count):
        with self._lock:
            self.missed += count
            self._window_missed += count

    def _summary(self, start, missed):
        size = self._periods.size
        start = max(start, self._count - size)
        idx = np.arange(start, self._count) % size
        periods, busy = self._periods[idx], self._busy[idx]
        out = {'ticks': int(idx.size), 'missed_ticks': int(missed),
               'target_hz': 1.0 / self.target_period_s}
        if idx.size == 0:
            return dict(out, achieved_hz=0.0, jitter_p50_ms=float('nan'),
                        jitter_p99_ms=float('nan'), jitter_max_ms=float('nan'),
                        busy_p99_ms=float('nan'))
        jitter = np.abs(periods - self.target_period_s) * 1e3
        p50, p99 = np.percentile(jitter, [50, 99])
        return dict(out, achieved_hz=float(idx.size / periods.sum()),
                    jitter_p50_ms=float(p50), jitter_p99_ms=float(p99),
                    jitter_max_ms=float(jitter.max()),
                    busy_p99_ms=float(np.percentile(busy, 99) * 1e3))

    def window(self):
        """Return the stats of the ticks since the previous call."""
        with self._lock:
            out = self._summary(self._window_start, self._window_missed)
            self._window_start, self._window_missed = self._count, 0
        return out

    def total(self):
        """Return the stats of every tick since the last reset (rate change)."""
        with self._lock:
            return dict(self._summary(0, self.missed),
                        seconds=time.monotonic() - self.started)


class CommandStream:
    """Call ``tick()`` every ``1 / rate_hz`` seconds on its own thread.

    ``on_error(exc)`` receives exceptions from ``tick`` (the stream keeps running: a
    controller must keep holding even if one tick failed).
    """

    def __init__(self, tick, rate_hz, on_error=None, name='command_stream', priority=0,
                 logger=LOG):
        self._tick = tick
        self._on_error = on_error or (lambda err: LOG.exception('tick failed: %s', err))
        self._logger = logger
        self._period = 1.0 / float(rate_hz)
        self._pending = None
        self._pending_priority = int(priority)
        self.scheduling = 'normal'
        self.native_id = None
        self._stop = threading.Event()
        self.stats = PeriodStats(self._period)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def rate_hz(self):
        return 1.0 / self._period

    @property
    def period_s(self):
        return self._period

    def start(self):
        self._thread.start()

    def stop(self, timeout=1.0):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def set_rate(self, rate_hz):
        """Switch the rate at the next tick; the stats restart."""
        rate_hz = float(rate_hz)
        if not rate_hz > 0:
            raise ValueError(f'rate_hz: must be > 0, got {rate_hz}')
        self._pending = 1.0 / rate_hz

    def set_process_priority(self, priority):
        """Put the process's other threads at SCHED_FIFO ``priority`` (0: normal); logs."""
        try:
            set_process_priority(priority, exclude=(self.native_id,))
            self._logger.info(f'other threads: SCHED_FIFO {priority}' if priority else
                              'other threads: normal scheduling')
        except OSError as err:
            self._logger.warning(f'process_priority {priority} refused ({err}); other '
                                 f'threads stay at normal scheduling')

    def diagnostic_values(self):
        """Send-side stats for /diagnostics: the last window and the total since reset."""
        window, total = self.stats.window(), self.stats.total()
        values = {f'send_{key}': window[key] for key in (
            'target_hz', 'achieved_hz', 'jitter_p50_ms', 'jitter_p99_ms', 'jitter_max_ms',
            'missed_ticks', 'busy_p99_ms')}
        values.update({f'send_total_{key}': total[key] for key in (
            'seconds', 'ticks', 'achieved_hz', 'jitter_p50_ms', 'jitter_p99_ms',
            'jitter_max_ms', 'missed_ticks')})
        values['scheduling'] = self.scheduling
        return values

    def set_priority(self, priority):
        """Set normal scheduling (0) or SCHED_FIFO (1-99); the thread applies it."""
        self._pending_priority = int(priority)

    def _apply_priority(self):
        priority, self._pending_priority = self._pending_priority, None
        try:
            _set_fifo(0, priority)  # 0: this thread
            self.scheduling = f'SCHED_FIFO {priority}' if priority > 0 else 'normal'
            self._logger.info(f'command thread scheduling: {self.scheduling}')
        except (OSError, AttributeError) as err:
            self._logger.warning(f'command thread: SCHED_FIFO {priority} refused ({err}); '
                                 f'staying {self.scheduling} (needs CAP_SYS_NICE or rtprio)')

    def _wait_until(self, deadline):
        clock = time.perf_counter
        while not self._stop.is_set():
            remaining = deadline - clock() - SPIN_MARGIN_S
            if remaining <= 0:
                break
            time.sleep(min(remaining, MAX_SLEEP_S))
            if self._pending is not None:
                return False
        while clock() < deadline:
            pass
        return True

    def _run(self):
        self.native_id = threading.get_native_id()
        clock = time.perf_counter
        deadline = clock() + self._period
        last = None
        while not self._stop.is_set():
            if self._pending_priority is not None:
                self._apply_priority()
            if self._pending is not None:
                self._period, self._pending = self._pending, None
                self.stats.reset(self._period)
                deadline, last = clock() + self._period, None
            if not self._wait_until(deadline) or self._stop.is_set():
                continue
            start = clock()
            try:
                self._tick()
            except Exception as err:  # noqa: BLE001 - keep streaming (holding) whatever failed
                self._on_error(err)
            end = clock()
            if last is not None:
                self.stats.record(start - last, end - start)
            last = start
            deadline += self._period
            behind = end - deadline
            if behind > self._period:
                skipped = int(behind // self._period)
                self.stats.add_missed(skipped)
                deadline += skipped * self._period


class CommandOutputs:
    """Publish one joint command in each selected form (the ros2_control conventions).

    ``float64_multi_array``: positions in joint order, what JointGroupPositionController
    takes; ``joint_trajectory``: one point, zero stamp (start now), reached within one
    command period; ``joint_state``: names, positions, stamp. Publishers are created the
    first time a form is selected and kept (the stream thread may be publishing).
    """

    def __init__(self, node, joint_names, forms):
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float64MultiArray
        from trajectory_msgs.msg import JointTrajectory

        from dial_ros.nodes import common
        self._node, self._joint_names, self._pubs = node, list(joint_names), {}
        self._kinds = {'float64_multi_array': (Float64MultiArray, common.TOPIC_COMMAND),
                       'joint_trajectory': (JointTrajectory, common.TOPIC_TRAJECTORY),
                       'joint_state': (JointState, common.TOPIC_COMMAND_STATE)}
        self._qos = common.QOS_COMMAND
        self.sent = 0
        self.select(forms)

    def select(self, forms):
        for form in forms:
            if form not in self._pubs:
                kind, topic = self._kinds[form]
                self._pubs[form] = self._node.create_publisher(kind, topic, self._qos)
        self._forms = tuple(forms)

    def destroy(self):
        """Destroy the publishers (call only once the stream that publishes has stopped)."""
        for pub in self._pubs.values():
            self._node.destroy_publisher(pub)
        self._pubs, self._forms = {}, ()

    def publish(self, cmd, now_s, period_s):
        from builtin_interfaces.msg import Duration
        from trajectory_msgs.msg import JointTrajectoryPoint

        from dial_ros.nodes.common import sec_to_stamp
        data = array.array('d', np.ascontiguousarray(cmd, np.float64).tobytes())
        for form in self._forms:
            kind, _ = self._kinds[form]
            if form == 'float64_multi_array':
                msg = kind(data=data)
            elif form == 'joint_trajectory':
                reach = Duration(sec=int(period_s), nanosec=int(period_s % 1.0 * 1e9))
                point = JointTrajectoryPoint(positions=data, time_from_start=reach)
                msg = kind(joint_names=self._joint_names, points=[point])
            else:
                msg = kind(name=self._joint_names, position=data)
                sec_to_stamp(now_s, msg.header.stamp)
            self._pubs[form].publish(msg)
        self.sent += 1
