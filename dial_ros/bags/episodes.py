"""Episode recording without ROS: idle -> recording -> reset -> idle, one bag per episode.

:class:`EpisodeRecorder` takes raw messages from any thread (``submit``), queues them
(bounded in bytes, so a slow disk never blocks the middleware's callbacks; overflow is
counted as ``dropped``) and writes them from one worker thread into a
:class:`~dial_ros.bags.writer.BagWriter` per episode under ``output_dir``. A topic joins an
episode's bag with its first message, so an episode holds only what was published (a human
demonstration may have a camera and nothing else). ``stop`` drains the queue, then
finalises the bag with its outcome and enters the reset phase (``reset_s``; a start ends it
early). ``discard`` deletes the episode folder (or keeps it tagged ``outcome: discard``).
A write error (disk full) ends the episode: the bag is finalised as far as it can be and the
error is kept in ``last_error``.
"""
import collections
import logging
import pathlib
import re
import shutil
import threading
import time

from dial_ros.bags import metadata as meta
from dial_ros.bags.writer import BagWriter, RecordingError

LOG = logging.getLogger(__name__)
IDLE, RECORDING, RESET = 'idle', 'recording', 'reset'
_EPISODE = re.compile(r'^episode_(\d+)')


def next_episode_dir(output_dir, when=None):
    """``<output_dir>/episode_<NNNN>_<YYYYmmdd_HHMMSS>`` with N after the highest there."""
    output_dir = pathlib.Path(output_dir)
    found = [int(m.group(1)) for p in output_dir.glob('episode_*')
             if (m := _EPISODE.match(p.name))] if output_dir.is_dir() else []
    index = max(found, default=-1) + 1
    stamp = time.strftime('%Y%m%d_%H%M%S', time.localtime(when))
    return output_dir / f'episode_{index:04d}_{stamp}', index


class EpisodeRecorder:
    """One bag per episode; see the module docstring. ``writer_options`` go to BagWriter."""

    def __init__(self, output_dir, writer_options=None, reset_s=0.0, queue_mb=512.0,
                 discard_mode='delete', stop_grace_s=1.0, clock=time.monotonic,
                 wall_ns=time.time_ns):
        if discard_mode not in ('delete', 'tag'):
            raise ValueError(f"discard_mode: {discard_mode!r} is not 'delete' or 'tag'")
        self.output_dir = pathlib.Path(output_dir)
        self.writer_options = dict(writer_options or {})
        self.reset_s, self.discard_mode, self.clock = float(reset_s), discard_mode, clock
        self.stop_grace_s, self.wall_ns = float(stop_grace_s), wall_ns
        self.queue_bytes_max = int(queue_mb * 1e6)
        self.state = IDLE
        self.episode = None        # index of the current / last episode
        self.path = None           # folder of the current / last episode
        self.last_error = None
        self.last_summary = None
        self.dropped = 0           # accepted messages that never reached the bag
        self.received = collections.Counter()
        self._writer = None
        self._start_ns, self._stop_ns = 0, None     # the episode: received in [start, stop)
        self._last_seen, self._caught_up = {}, set()
        self._reset_until = 0.0
        self._control = threading.Lock()        # start / stop / discard, one at a time
        self._cond = threading.Condition()
        self._queue = collections.deque()
        self._queued_bytes = self._busy = 0
        self._closing = False
        self._worker = threading.Thread(target=self._work, name='bag-writer', daemon=True)
        self._worker.start()

    # --- control ---------------------------------------------------------------------------
    def start(self, tags=None, path=None):
        """Start an episode (from idle or reset); returns its folder. ValueError if recording."""
        with self._control:
            self.tick()
            if self.state == RECORDING:
                raise ValueError(f'already recording episode {self.episode} ({self.path})')
            tags = meta.check_tags({k: v for k, v in (tags or {}).items() if k != 'outcome'})
            if path is None:
                path, index = next_episode_dir(self.output_dir)
            else:
                path, index = pathlib.Path(path), (self.episode or -1) + 1
            writer = BagWriter(path, tags={**tags, 'episode': str(index)},
                               **self.writer_options)
            with self._cond:
                self._writer, self.path, self.episode = writer, path, index
                self.state, self.last_error = RECORDING, None
                self._start_ns, self._stop_ns = self.wall_ns(), None
                self._last_seen = {}
            LOG.info('episode %d: recording into %s', index, path)
            return path

    def stop(self, outcome='unknown', **tags):
        """Finalise the episode with ``outcome``; enter the reset phase. Summary dict.

        The episode holds what the middleware received between start and stop (receive
        stamps ``log_ns``), also what its callbacks deliver late (see ``_catch_up``).
        """
        outcome = meta.normalise_outcome(outcome) or 'unknown'
        return self._end(outcome, tags)

    def discard(self):
        """End the episode and delete its folder (or tag it discard). Summary dict."""
        return self._end('discard', {})

    def reset(self, outcome='unknown'):
        """Enter the reset phase (stopping an episode in progress with ``outcome``)."""
        if self.state == RECORDING:
            return self.stop(outcome)
        with self._cond:
            self.state, self._reset_until = RESET, self.clock() + self.reset_s
        return None

    def tick(self):
        """End the reset phase when its time is up (call it periodically)."""
        with self._cond:
            if self.state == RESET and self.clock() >= self._reset_until:
                self.state = IDLE

    def reset_left_s(self):
        return max(0.0, self._reset_until - self.clock()) if self.state == RESET else 0.0

    def _end(self, outcome, tags):
        with self._control:
            with self._cond:
                if self.state != RECORDING:
                    why = f'; the last episode ended on: {self.last_error}' \
                        if self.last_error else ''
                    raise ValueError(f'not recording (state {self.state}){why}')
                self._catch_up()
                writer, self._writer = self._writer, None
                self.state = RESET if self.reset_s > 0 else IDLE
                self._reset_until = self.clock() + self.reset_s
                while self._queue or self._busy:   # messages accepted before the stop
                    self._cond.wait(0.1)
            summary = writer.close(outcome=outcome, **tags)
            if outcome == 'discard' and self.discard_mode == 'delete':
                shutil.rmtree(writer.dir, ignore_errors=True)
                summary['deleted'] = True
            self.last_summary = summary
            LOG.info('episode %d: %s, %d messages, %s', self.episode, outcome,
                     summary['messages'], writer.dir)
            return summary

    def _catch_up(self):
        """Let callbacks that lag the middleware deliver what was received before the stop.

        Waits until every recently active topic has delivered a message received after the
        stop, at most ``stop_grace_s``. Called with ``_cond`` held.
        """
        self._stop_ns, self._caught_up = self.wall_ns(), set()
        now = self.clock()
        active = {t for t, seen in self._last_seen.items() if now - seen < 0.5}
        deadline = time.monotonic() + self.stop_grace_s
        while not active <= self._caught_up and time.monotonic() < deadline:
            self._cond.wait(min(0.05, max(0.0, deadline - time.monotonic())))

    # --- data ------------------------------------------------------------------------------
    def submit(self, topic, msgtype, qos, data, log_ns, publish_ns=None):
        """Queue one raw message for the episode; False when not recording or queue full."""
        with self._cond:
            if self._writer is None or log_ns < self._start_ns:
                return False
            if self._stop_ns is not None and log_ns >= self._stop_ns:
                self._caught_up.add(topic)
                self._cond.notify_all()
                return False
            self._last_seen[topic] = self.clock()
            self.received[topic] += 1
            if self._queued_bytes + len(data) > self.queue_bytes_max:
                self.dropped += 1
                return False
            self._queue.append((self._writer, topic, msgtype, qos, data, log_ns, publish_ns))
            self._queued_bytes += len(data)
            self._cond.notify()
            return True

    def queued(self):
        """(messages, bytes) waiting for the disk."""
        with self._cond:
            return len(self._queue), self._queued_bytes

    def writer(self):
        """The open episode's BagWriter (None when not recording)."""
        return self._writer

    def _work(self):
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    if not self._cond.wait(0.25):
                        break
                if not self._queue:
                    writer = self._writer
                    if self._closing:
                        return
                    item = None
                else:
                    item = self._queue.popleft()
                    self._queued_bytes -= len(item[4])
                    self._busy += 1
            if item is None:
                if writer is not None:
                    self._guarded(writer, writer.tick)
                continue
            try:
                self._write(item)
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()

    def _write(self, item):
        writer, topic, msgtype, qos, data, log_ns, publish_ns = item
        if writer.error is not None or writer.closed:
            with self._cond:
                self.dropped += 1
            return
        if topic not in writer.topics:
            try:
                writer.add_topic(topic, msgtype, qos)
            except ValueError as err:
                LOG.error('%s: not recorded: %s', topic, err)
                with self._cond:
                    self.dropped += 1
                return
        self._guarded(writer, writer.write, topic, data, log_ns, publish_ns)

    def _guarded(self, writer, func, *args):
        try:
            func(*args)
        except RecordingError as err:
            with self._cond:
                self.dropped += 1
                self.last_error = str(err)
                if self._writer is writer:       # the episode ends here
                    self._writer, self.state = None, IDLE
            LOG.error('episode %s: %s', self.episode, err)
            self.last_summary = writer.close(outcome='unknown')

    def close(self):
        """Finalise an open episode (outcome unknown) and stop the worker.

        Call it after the middleware stopped delivering (no grace period is waited).
        """
        self.stop_grace_s = 0.0
        if self.state == RECORDING:
            try:
                self.stop('unknown')
            except ValueError:
                pass
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._worker.join(timeout=5.0)
