"""Demo recorder: raw topics -> one rosbag2 (MCAP) directory per episode.

    python -m dial_ros.nodes.recorder --ros-args -p output_dir:=demos -p task:=lift

Records ``topics`` (or every topic with ``all_topics``) WITHOUT deserialising them (raw
subscriptions whose QoS follows the publishers), through a byte-bounded queue and a writer
thread, into ``<output_dir>/episode_<NNNN>_<date>_<time>/`` (see dial_ros.bags.writer:
segments rotated by ``max_segment_mb`` / ``max_segment_s``, metadata.yaml with the episode
tags in custom_data, crash-safe chunks; ``python -m dial_ros.bags recover`` after a crash).
A topic joins an episode with its first message: a human demonstration may hold only the
camera (and /human/wrist_poses); nothing requires robot actions.

Episode control (state: idle -> recording -> reset -> idle, in /diagnostics):
  ~/start ~/stop_success ~/stop_fail ~/discard   std_srvs/Trigger; tags come from the
      parameters task, instruction, source, operator, robot, embodiment (set them before
      ~/start, e.g. from rqt); discard deletes the folder or tags it (``discard_mode``)
  ~/episode_event   dial_ros/EpisodeEvent (start | stop | discard | reset); non-empty task,
      source and operator_name of a start override the parameters
  /expert/episode   std_msgs/String JSON {event: start|stop, outcome, seed} from the scripted
      expert, obeyed while ``follow_expert`` is true
Interventions: /dial/command_source (the controller's String, latched: policy | teleop) is
followed; an episode in which a teleop source drove at any time is tagged ``source:
intervention``, ``interventions`` (how many takeovers) and ``intervention_segments`` (JSON
[[start, end], ...] in seconds on the bag's receive clock), and the switches themselves are
in the bag (the topic is recorded), so the conversion keeps those segments.
After a stop the reset phase lasts ``reset_s`` (a start ends it early). SIGINT / SIGTERM
finalise an open episode with outcome ``unknown``.

/diagnostics (1 Hz): state, episode, folder, messages per topic, MB written, write rate,
dropped (queue overflow or write errors), topics below their ``expected_rates``.
"""
import dataclasses
import functools
import json
import os
import pathlib
import queue
import sys
import threading
import time

from rclpy.node import Node
from rclpy.task import Future
from std_msgs.msg import String
from std_srvs.srv import Trigger

from dial_ros.bags.episodes import RECORDING, EpisodeRecorder
from dial_ros.bags.metadata import SOURCES, normalise_outcome
from dial_ros.bags.ros_topics import TopicTap
from dial_ros.core.sync import RateMonitor
from dial_ros.msg import EpisodeEvent
from dial_ros.nodes import common
from dial_ros.schema import setting
from dial_ros.topics import TOPIC_EXPERT_EPISODE as TOPIC_EXPERT
from dial_ros.topics import (TOPIC_COMMAND_SOURCE, TOPIC_EXPERT_LABEL, TOPIC_TELEOP,
                             TOPIC_WRISTS)

DEFAULT_TOPICS = [common.TOPIC_IMAGE, common.TOPIC_JOINT_STATES, common.TOPIC_COMMAND,
                  common.TOPIC_CHUNK, common.TOPIC_INTENT, common.TOPIC_OBSERVATION,
                  common.TOPIC_INSTRUCTION, TOPIC_WRISTS, TOPIC_EXPERT_LABEL,
                  TOPIC_COMMAND_SOURCE, TOPIC_TELEOP]
TAGS = ('task', 'instruction', 'source', 'operator', 'robot', 'embodiment')


@dataclasses.dataclass
class Params:
    """Parameters of the demo recorder (ROS parameters; see common.declare_params)."""

    topics: list = setting(DEFAULT_TOPICS, 'topics to record (read at start-up)',
                           read_only=True)
    all_topics: bool = setting(False, 'record every topic of the graph instead (read at '
                               'start-up)', read_only=True)
    output_dir: str = setting('~/dial_ros_demos', 'folder of the episode folders')
    task: str = setting('', 'episode tag: task name')
    instruction: str = setting('', 'episode tag: language instruction')
    source: str = setting('teleop', 'episode tag: who acts', choices=SOURCES[:-1])
    operator: str = setting('', 'episode tag: operator name')
    robot: str = setting('gr1_sim', 'episode tag: robot')
    embodiment: str = setting('gr1_sim', 'episode tag: embodiment config')
    max_segment_mb: float = setting(1000.0, 'start a new .mcap segment at this size; 0 = '
                                    'never', low=0.0, high=1e6, unit='MB')
    max_segment_s: float = setting(60.0, 'start a new segment after this long; 0 = never',
                                   low=0.0, high=86400.0, unit='s')
    chunk_s: float = setting(0.5, 'write a partly filled chunk after this long (what a crash '
                             'can lose)', low=0.01, high=60.0, unit='s')
    compression: str = setting('none', 'chunk compression', choices=('none', 'lz4', 'zstd'))
    fsync: bool = setting(True, 'fsync finished segments and metadata.yaml, and the open '
                          'segment every fsync_s')
    fsync_s: float = setting(1.0, 'fsync the open segment at most this often (what power '
                             'loss can cost); 0 = only at rotation', low=0.0, high=3600.0,
                             unit='s')
    queue_depth: int = setting(100, 'subscription queue depth of large messages (images, '
                               'latents; read at start-up)', low=1, high=10000,
                               read_only=True)
    queue_depth_small: int = setting(1000, 'subscription queue depth of other messages (read '
                                     'at start-up)', low=1, high=100000, read_only=True)
    queue_mb: float = setting(1024.0, 'memory for messages waiting for the disk; more is '
                              'dropped (and counted)', low=1.0, high=65536.0, unit='MB')
    reset_s: float = setting(5.0, 'reset phase after each episode', low=0.0, high=3600.0,
                             unit='s')
    discard_mode: str = setting('delete', 'what discard does to the episode folder',
                                choices=('delete', 'tag'))
    follow_expert: bool = setting(False, 'start/stop episodes on /expert/episode events')
    expected_rates: list = setting(['/camera/head/image_raw=20.0'],
                                   "'topic=hz': warn while recording when a topic falls "
                                   'below 80 % of it')

    def check(self):
        """Cross-field rules (ValueError naming the field)."""
        if not self.all_topics and not self.topics:
            raise ValueError('topics: empty (or set all_topics)')
        parse_rates(self.expected_rates)


def parse_rates(items):
    """['topic=hz', ...] -> {topic: hz}; ValueError naming a bad entry."""
    rates = {}
    for item in items:
        topic, sep, value = str(item).partition('=')
        try:
            hz = float(value)
        except ValueError:
            hz = -1.0
        if not sep or not topic.strip() or not hz > 0:
            raise ValueError(f"expected_rates: {item!r} is not 'topic=hz' with hz > 0")
        rates[topic.strip()] = hz
    return rates


class RecorderNode(Node):
    """Episode recorder; see the module docstring."""

    def __init__(self, **kwargs):
        super().__init__('recorder', **kwargs)
        self.params = common.declare_params(self, Params(), on_change=self._on_param)
        p = self.params
        self.recorder = EpisodeRecorder(self._output_dir(), self._writer_options(),
                                        reset_s=p.reset_s, queue_mb=p.queue_mb,
                                        discard_mode=p.discard_mode)
        self._lock = threading.Lock()
        self._make_monitors()
        self._rate_state = (time.monotonic(), 0)
        self._started, self._lost0 = 0.0, {}
        self.throttle = common.Throttle(self.get_logger(), 10.0)
        # One executor thread takes every message (a multi-threaded rclpy executor costs 4x
        # the CPU and lags by 100s of ms); control actions, which wait for the disk, run in
        # order on a thread of their own and answer services through coroutines.
        self._jobs = queue.Queue()
        threading.Thread(target=self._run_jobs, name='recorder-control', daemon=True).start()
        self.tap = TopicTap(self, self._on_message, p.topics, p.all_topics, p.queue_depth,
                            p.queue_depth_small)
        for name, outcome in (('start', None), ('stop_success', 'success'),
                              ('stop_fail', 'fail'), ('discard', 'discard')):
            self.create_service(Trigger, f'~/{name}', functools.partial(self._service, outcome))
        self.create_subscription(EpisodeEvent, '~/episode_event', self._on_event,
                                 common.QOS_COMMAND)
        self.create_subscription(String, TOPIC_EXPERT, self._on_expert, common.QOS_COMMAND)
        # who commands the joints: teleop stretches of an episode are intervention segments
        self._source, self._segments = 'policy', []
        self.create_subscription(String, TOPIC_COMMAND_SOURCE, self._on_source,
                                 common.QOS_LATCHED)
        self.diagnostics = common.Diagnostics(self)
        self.create_timer(1.0, self._tick)
        self.tap.refresh()
        self.get_logger().info(f'recorder: {"all topics" if p.all_topics else p.topics} -> '
                               f'{self._output_dir()}')

    # --- parameters ----------------------------------------------------------------------
    def _output_dir(self):
        return os.path.abspath(os.path.expanduser(self.params.output_dir))

    def _writer_options(self):
        p = self.params
        return {'max_segment_mb': p.max_segment_mb, 'max_segment_s': p.max_segment_s,
                'chunk_s': p.chunk_s, 'compression': p.compression, 'fsync': p.fsync,
                'fsync_s': p.fsync_s}

    def _make_monitors(self):
        with self._lock:
            self.monitors = {t: RateMonitor(hz, max(1.0, 3.0 / hz))
                             for t, hz in parse_rates(self.params.expected_rates).items()}

    def _on_param(self, name, value):
        # applies from the next episode (the open one keeps its writer)
        self.recorder.output_dir = pathlib.Path(self._output_dir())
        self.recorder.writer_options = self._writer_options()
        self.recorder.reset_s = self.params.reset_s
        self.recorder.discard_mode = self.params.discard_mode
        self.recorder.queue_bytes_max = int(self.params.queue_mb * 1e6)
        if name == 'expected_rates':
            self._make_monitors()

    # --- data ----------------------------------------------------------------------------
    def _on_message(self, topic, msgtype, offered, data, log_ns, publish_ns):
        if self.recorder.submit(topic, msgtype, offered, data, log_ns, publish_ns):
            monitor = self.monitors.get(topic)
            if monitor is not None:
                with self._lock:
                    monitor.tick(time.monotonic())

    # --- episode control -----------------------------------------------------------------
    def _tags(self, **override):
        tags = {k: getattr(self.params, k) for k in TAGS}
        tags.update({k: v for k, v in override.items() if v})
        return tags

    def _do(self, action, outcome=None, **tags):
        """Run a control action; returns (ok, message)."""
        try:
            if action == 'start':
                with self._lock:
                    for monitor in self.monitors.values():
                        monitor.reset()
                path = self.recorder.start(self._tags(**tags))
                self._started, self._lost0 = time.monotonic(), dict(self.tap.lost)
                with self._lock:   # an episode that starts with the operator driving
                    self._segments = [[time.time(), None]] if self._source == 'teleop' else []
                return True, json.dumps({'episode': self.recorder.episode, 'path': str(path)})
            if action == 'reset':
                summary = self.recorder.reset(outcome or 'unknown')
            elif outcome == 'discard':
                summary = self.recorder.discard()
            else:
                lost = self._episode_lost()
                summary = self.recorder.stop(outcome or 'unknown', **(
                    {'lost_in_transport': json.dumps(lost)} if lost else {}),
                    **self._intervention_tags())
            return True, json.dumps(summary or {'state': self.recorder.state})
        except (ValueError, OSError) as err:
            self.get_logger().warning(f'{action}: {err}')
            return False, str(err)

    def _run_jobs(self):
        while True:
            future, func, args, kwargs = self._jobs.get()
            if func is None:
                return
            try:
                future.set_result(func(*args, **kwargs))
            except Exception as err:  # reported to the caller, the thread survives
                future.set_exception(err)
            executor = self.executor
            if executor is not None:
                executor.wake()

    def _submit_job(self, func, *args, **kwargs):
        future = Future()
        self._jobs.put((future, func, args, kwargs))
        return future

    async def _service(self, outcome, request, response):
        response.success, response.message = await self._submit_job(
            self._do, 'start' if outcome is None else 'stop', outcome)
        return response

    def _on_event(self, msg):
        self._submit_job(self._event, msg)

    def _event(self, msg):
        event = msg.event.strip().lower()
        if event == 'start':
            self._do('start', task=msg.task, source=msg.source, operator=msg.operator_name)
        elif event in ('stop', 'discard', 'reset'):
            try:
                outcome = 'discard' if event == 'discard' else normalise_outcome(msg.outcome)
            except ValueError as err:
                self.get_logger().error(f'episode_event: {err}')
                return
            self._do(event if event == 'reset' else 'stop', outcome)
        else:
            self.get_logger().error(f'episode_event: unknown event {msg.event!r} '
                                    '(start, stop, discard or reset)')

    def _on_expert(self, msg):
        if self.params.follow_expert:
            self._submit_job(self._expert, msg)

    def _expert(self, msg):
        try:
            data = json.loads(msg.data)
            event = data['event']
        except (ValueError, KeyError, TypeError) as err:
            self.get_logger().error(f'{TOPIC_EXPERT}: bad event {msg.data!r}: {err}')
            return
        if event == 'start':
            if self.recorder.state == RECORDING:
                self._do('stop', 'unknown')
            self._do('start', operator=self.params.operator or 'scripted_expert',
                     seed=str(data.get('seed', '')))
        elif event == 'stop' and self.recorder.state == RECORDING:
            outcome = data.get('outcome', '')
            self._do('stop', 'success' if outcome == 'success' else 'fail')

    def _on_source(self, msg):
        source = msg.data.strip()
        with self._lock:
            if source == self._source:
                return
            self._source = source
            if self.recorder.state != RECORDING:
                return
            if source == 'teleop':
                self._segments.append([time.time(), None])
            elif self._segments and self._segments[-1][1] is None:
                self._segments[-1][1] = time.time()
        self.get_logger().info(f'command source: {source} (episode {self.recorder.episode})')

    def _intervention_tags(self):
        """Tags of the episode that stops now: intervention segments, if there were any."""
        with self._lock:
            segments, self._segments = self._segments, []
        if not segments:
            return {}
        now = time.time()
        spans = [[round(a, 3), round(now if b is None else b, 3)] for a, b in segments]
        return {'source': 'intervention', 'interventions': str(len(spans)),
                'intervention_segments': json.dumps(spans)}

    # --- health --------------------------------------------------------------------------
    def _episode_lost(self):
        return {t: n - self._lost0.get(t, 0) for t, n in self.tap.lost.items()
                if n > self._lost0.get(t, 0)}

    def _problems(self, now, values):
        """Transport losses and topics below their expected rate in this episode."""
        lost = self._episode_lost()
        values['lost_in_transport'] = sum(lost.values())
        problems = [f'lost in transport: {lost}'] if lost else []
        with self._lock:
            for topic, monitor in self.monitors.items():
                if now - self._started < monitor.window_s:
                    continue       # judged once a full window has passed
                ok, rate, reason = monitor.check(now)
                values[f'{topic} rate_hz'] = -1.0 if rate is None else rate
                if not ok:
                    problems.append(f'{topic}: {reason}')
        return problems

    def _tick(self):
        self.tap.refresh()
        self.recorder.tick()
        rec, writer = self.recorder, self.recorder.writer()
        now = time.monotonic()
        written = writer.bytes_written if writer is not None else 0
        last_t, last_b = self._rate_state
        mb_s = max(0.0, written - last_b) / 1e6 / max(now - last_t, 1e-3)
        self._rate_state = (now, written)
        queued, queued_bytes = rec.queued()
        values = {'state': rec.state, 'episode': -1 if rec.episode is None else rec.episode,
                  'path': str(rec.path or ''), 'mb_written': written / 1e6,
                  'write_mb_per_s': mb_s, 'dropped': rec.dropped, 'queued': queued,
                  'queued_mb': queued_bytes / 1e6, 'reset_left_s': rec.reset_left_s(),
                  'subscribed': len(self.tap.subs)}
        if writer is not None:
            values['messages'] = writer.message_count
            values.update({f'{t} messages': n for t, n in writer.counts().items()})
        problems = self._problems(now, values) if rec.state == RECORDING else []
        if problems:
            self.throttle('warning', 'recording', 'recording: ' + '; '.join(problems))
        level = 'error' if rec.last_error else 'warn' if problems or rec.dropped else 'ok'
        message = rec.last_error or '; '.join(problems) or rec.state
        self.diagnostics.publish(level, message, values)

    def close(self):
        """Finalise an open episode (outcome unknown); called by main."""
        self._jobs.put((None, None, (), {}))
        self.recorder.close()


def main(args=None):
    """Run the recorder until SIGINT/SIGTERM; its open episode is finalised (``close``)."""
    return common.run_node(RecorderNode, args)


if __name__ == '__main__':
    sys.exit(main())
