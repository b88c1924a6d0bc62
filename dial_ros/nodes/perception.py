"""Perception: synchronise cameras (+ joint states) and run the frozen ViT once per frame.

Subscribes (sensor-data QoS): every topic in ``camera_topics`` (sensor_msgs/Image, rgb8 or
bgr8) and, with ``use_joint_states``, /joint_states (sensor_msgs/JointState). Sets are
matched on header stamps by ``ApproximateTimeSync`` (message_filters semantics: queue size,
slop in seconds).

Publishes, per synchronised set:
  /dial/observation_latent       dial_ros/LatentTensor, the (64, D) ViT tokens of the FIRST
                                 camera; header = that frame's header, horizon 0, valid
  /dial/observation_joint_state  sensor_msgs/JointState of the set, restamped with the frame's
                                 stamp (published just before the latent)
  /diagnostics                   per-camera rates vs expected, latencies, drop counts (1 Hz)

Only the first camera is encoded: System-2's prompt and System-1 take one frame. Further
cameras are synchronised (a set waits for all of them) and counted, so a dead or slow camera
shows in the rates, in the sync counts and in a throttled warning.

The ViT runs in a worker thread on a one-slot mailbox: when it is slower than the cameras,
a newer set replaces the waiting one (counted as ``dropped_busy``), so latency never queues.
The sync queue must hold ``queue_size`` items of the fastest stream for as long as a camera
frame takes to arrive (e.g. 1 kHz joint states and 30 ms camera latency need >= 30).

Lifecycle (lifecycle.py): ``configure`` checks the parameters, loads the ViT, subscribes and
starts the worker; ``activate`` starts publishing; while 'inactive' inputs are only counted
(no sync, no ViT, nothing published; deactivate waits for an encoding in progress);
``cleanup`` frees the model. A configure that cannot load the model returns FAILURE, logs
why and leaves the node 'unconfigured'. With ``autostart`` (default) the node configures and
activates itself at start-up (if that fails the process exits 1); with ``autostart:=false``
it waits for /perception/change_state.
"""
import dataclasses
import sys
import threading
import time

import numpy as np
from PIL import Image as PilImage
from sensor_msgs.msg import Image, JointState

from dial_ros.core.sync import ApproximateTimeSync, RateMonitor
from dial_ros.msg import LatentTensor
from dial_ros.nodes import common
from dial_ros.nodes.lifecycle import ModelNode, ModelParams, free_memory
from dial_ros.schema import setting

JUMP_BACK_S = 1.0  # a stamp this far behind the last one is a clock reset (bag loop, sim)
THROTTLE_S = 2.0


@dataclasses.dataclass
class Params(ModelParams):
    """Parameters of the perception node (ROS parameters; see common.declare_params)."""

    camera_topics: list = setting(['/camera/head/image_raw'],
                                  'image topics to synchronise; the first is encoded by the '
                                  'ViT (read at start-up)', read_only=True)
    expected_camera_hz: float = setting(20.0, 'rate each camera should deliver; a camera '
                                        'below 80 % of it is reported', low=1.0, high=240.0,
                                        unit='Hz')
    sync_queue_size: int = setting(30, 'items kept per stream for matching', low=1, high=1000)
    sync_slop_s: float = setting(0.02, 'max stamp spread within a synchronised set',
                                 low=0.0, high=1.0, unit='s')
    use_joint_states: bool = setting(True, '/joint_states joins the synchronised set '
                                     '(read at start-up)', read_only=True)
    max_frame_age_s: float = setting(1.0, 'drop inputs whose stamp is older (or newer) than '
                                     'this against the node clock; 0 = off', low=0.0,
                                     high=60.0, unit='s')
    resize: bool = setting(False, 'resize frames of another size to the model input with '
                           'Pillow (aspect not kept); false: drop them with an error')

    def check(self):
        """Cross-field rules (ValueError naming the field)."""
        if not self.camera_topics or not all(isinstance(t, str) and t
                                             for t in self.camera_topics):
            raise ValueError(f'camera_topics: expected non-empty topic names, got '
                             f'{self.camera_topics!r}')


class PerceptionNode(ModelNode):
    """Camera sync + frozen ViT as a lifecycle node; see the module docstring."""

    def __init__(self, **kwargs):
        super().__init__('perception', **kwargs)
        self.params = common.declare_params(self, Params(), on_change=self._on_param,
                                            check_now=False)
        self.policy = self.model_id = self.sync = None
        self.pub_latent = self.pub_joints = None
        self.subs = []
        self.cameras = list(self.params.camera_topics)
        self.streams = self.cameras + ([common.TOPIC_JOINT_STATES]
                                       if self.params.use_joint_states else [])
        self.counts = {key: 0 for key in ('bad_image', 'bad_joint_state', 'stale',
                                          'out_of_order', 'dropped_busy', 'encoded',
                                          'encode_errors')}
        self.received = [0] * len(self.streams)
        self._last = [-np.inf] * len(self.streams)
        self._make_monitors()
        self.compute_ms, self.age_ms = common.WindowStats(), common.WindowStats()
        self.seq = 0
        self.throttle = common.Throttle(self.get_logger(), THROTTLE_S)
        self.rate_throttle = common.Throttle(self.get_logger(), 10.0)
        self._joints_seen = 0
        # the ViT worker: a one-slot mailbox; _publishing (under _cond) gates its output
        self._slot, self._stop, self._publishing, self._worker = None, False, False, None
        self._cond = threading.Condition()
        self._encoding = threading.Lock()  # held by the worker while it encodes and publishes
        self.diagnostics = common.Diagnostics(self)
        self.create_timer(1.0, self._publish_diagnostics)
        if self.params.autostart:
            self.autostart()

    # --- lifecycle (see lifecycle.ModelNode) ---------------------------------------------
    def configure(self):
        refused = self.load_part('vision')
        if refused:
            return refused
        p = self.params
        self.size = self.policy.image_size
        self._make_sync()
        self.pub_latent = self.create_lifecycle_publisher(
            LatentTensor, common.TOPIC_OBSERVATION, common.QOS_LATENT)
        self.pub_joints = self.create_lifecycle_publisher(
            JointState, common.TOPIC_OBSERVATION_JOINT_STATE, common.QOS_LATENT)
        for i, topic in enumerate(self.cameras):
            self.subs.append(self.create_subscription(
                Image, topic, lambda m, i=i: self._on_image(i, m), common.QOS_SENSOR))
        if p.use_joint_states:
            self.subs.append(self.create_subscription(
                JointState, common.TOPIC_JOINT_STATES, self._on_joints, common.QOS_SENSOR))
        self._stop = False
        self._worker = threading.Thread(target=self._work, name='vit', daemon=True)
        self._worker.start()
        self.get_logger().info(
            f'configured: model {self.model_id}, {self.size}x{self.size} px, encoding '
            f'{self.cameras[0]}; sync {self.streams} (queue {p.sync_queue_size}, '
            f'slop {p.sync_slop_s} s)')

    def activate(self):
        self.sync.reset()  # never match a set with frames from before
        self._last = [-np.inf] * len(self.streams)
        with self._cond:
            self._slot, self._publishing = None, True
        self.get_logger().info('active: publishing observations')

    def deactivate(self):
        # waits for an encoding in progress: nothing is published after this returns
        with self._encoding, self._cond:
            was, self._publishing, self._slot = self._publishing, False, None
        if was:
            self.get_logger().info('inactive: inputs ignored, no observations published')

    def release(self):
        if self._worker is not None:
            with self._cond:
                self._stop = True
                self._cond.notify()
            self._worker.join(timeout=5.0)
            self._worker = None
        for sub in self.subs:
            self.destroy_subscription(sub)
        for pub in (self.pub_latent, self.pub_joints):
            if pub is not None:
                self.destroy_lifecycle_publisher(pub)
        self.subs, self.pub_latent, self.pub_joints, self.sync = [], None, None, None
        if self.policy is not None:
            device, self.policy, self.model_id = self.policy.device, None, None
            free_memory(device)
            self.get_logger().info('cleaned up: model freed')

    # --- parameters ----------------------------------------------------------------------
    def _make_sync(self):
        self.sync = ApproximateTimeSync(len(self.streams), self.params.sync_queue_size,
                                        self.params.sync_slop_s, self._on_set)

    def _make_monitors(self):
        hz = self.params.expected_camera_hz
        window = max(1.0, 3.0 / hz)
        self.monitors = [RateMonitor(hz, window) for _ in self.cameras]
        self.out_monitor = RateMonitor(hz, window)

    def _on_param(self, name, value):
        # runs in the parameter service callback, serialised with the subscriptions
        if name in ('sync_queue_size', 'sync_slop_s'):
            if self.sync is not None:  # else configure makes it
                self._make_sync()
        elif name == 'expected_camera_hz':
            self._make_monitors()
        elif name in ('checkpoint', 'embodiment', 'seed', 'device', 'torch_threads'):
            if self.policy is not None:
                self.get_logger().info(f'{name} takes effect at the next configure')
        self.get_logger().info(f'{name} set to {value}')

    # --- inputs --------------------------------------------------------------------------
    def _on_image(self, index, msg):
        topic = self.cameras[index]
        self.received[index] += 1
        self.monitors[index].tick(common.now_sec(self))
        if not self._publishing or not self._fresh(topic, msg.header.stamp):
            return  # inactive: counted for the rates only
        item = msg.header
        if index == 0:
            try:
                rgb = common.image_to_rgb(msg, None if self.params.resize
                                          else (self.size, self.size))
            except ValueError as err:
                self._reject('bad_image', f'{topic}: {err}', f'{topic}: {err}; frame dropped')
                return
            if rgb.shape[:2] != (self.size, self.size):
                rgb = np.asarray(PilImage.fromarray(rgb).resize(
                    (self.size, self.size), PilImage.BILINEAR))
            item = (msg.header, rgb)
        self._add(index, msg.header.stamp, item)

    def _on_joints(self, msg):
        index = len(self.cameras)
        self.received[index] += 1
        if not self._publishing:
            return
        if not self._fresh(common.TOPIC_JOINT_STATES, msg.header.stamp):
            return
        position = np.asarray(msg.position, float)
        if len(msg.name) != position.size or not np.all(np.isfinite(position)):
            self._reject('bad_joint_state', '/joint_states',
                         f'/joint_states: {len(msg.name)} names, {position.size} positions '
                         '(must match and be finite); dropped')
            return
        self._add(index, msg.header.stamp, msg)

    def _fresh(self, topic, stamp):
        limit = self.params.max_frame_age_s
        age = common.now_sec(self) - common.stamp_to_sec(stamp)
        if limit > 0 and abs(age) > limit:
            self._reject('stale', topic, f'{topic}: stamp is {age:.3f} s old '
                         f'(max_frame_age_s {limit}); dropped. Check the sender clock or '
                         'use_sim_time')
            return False
        return True

    def _add(self, index, stamp, item):
        stamp_s = common.stamp_to_sec(stamp)
        if stamp_s < self._last[index] - JUMP_BACK_S:
            self.get_logger().warning(f'{self.streams[index]}: time jumped back '
                                      f'{self._last[index] - stamp_s:.1f} s; resetting sync')
            self.sync.reset()
            self._last = [-np.inf] * len(self.streams)
        try:
            self.sync.add(index, stamp_s, item)
            self._last[index] = stamp_s
        except ValueError as err:
            self._reject('out_of_order', index, f'{self.streams[index]}: {err}; dropped')

    def _reject(self, kind, where, text):
        self.counts[kind] += 1
        self.throttle('error', (kind, where), text)

    def _on_set(self, items):
        # called by the sync on a match: keep only the newest set for the worker
        with self._cond:
            if self._slot is not None:
                self.counts['dropped_busy'] += 1
            self._slot = items
            self._cond.notify()

    # --- the ViT worker ------------------------------------------------------------------
    def _work(self):
        while True:
            with self._cond:
                while self._slot is None and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                items, self._slot = self._slot, None
            try:
                with self._encoding:
                    if self._publishing:
                        self._encode(items)
            except Exception as err:  # the worker must survive any single frame
                if not self.context.ok():
                    return  # Ctrl-C shut the context down: nothing can be published now
                self._reject('encode_errors', '', f'encoding failed: {err!r}; frame dropped')

    def _encode(self, items):
        header, rgb = items[0]
        if self.params.use_joint_states:
            joints = items[-1]
            joints.header.stamp = header.stamp
            self.pub_joints.publish(joints)
        start = time.perf_counter()
        tokens = self.policy.encode_frame(rgb)
        compute = time.perf_counter() - start
        msg = common.fill_latent(LatentTensor(), tokens, common.stamp_to_sec(header.stamp),
                                 self.params.latent_dtype, model_id=self.model_id,
                                 horizon=0, valid=True, seq=self.seq, compute_time=compute)
        msg.header = header  # the exact stamp (float seconds would round it) and frame_id
        self.pub_latent.publish(msg)
        now = common.now_sec(self)
        self.seq += 1
        self.counts['encoded'] += 1
        with self._cond:
            self.out_monitor.tick(now)
        self.compute_ms.add(compute * 1e3)
        self.age_ms.add((now - common.stamp_to_sec(header.stamp)) * 1e3)

    # --- health --------------------------------------------------------------------------
    def _publish_diagnostics(self):
        state = self.lifecycle_state
        if state != 'active':
            values = {'state': state, 'model_id': self.model_id or ''}
            values.update({f'{t} received': n for t, n in zip(self.streams, self.received)})
            self.diagnostics.publish('ok', state, values)
            return
        now = common.now_sec(self)
        values, problems = {'state': state,
                            'expected_camera_hz': self.params.expected_camera_hz}, []
        for i, topic in enumerate(self.cameras):
            ok, rate, reason = self.monitors[i].check(now)
            values[f'{topic} rate_hz'] = -1.0 if rate is None else rate
            values[f'{topic} received'] = self.received[i]
            if not ok:
                problems.append(f'{topic}: {reason}')
        if self.params.use_joint_states:
            values[f'{common.TOPIC_JOINT_STATES} received'] = self.received[-1]
            if self.received[-1] == self._joints_seen:
                problems.append(f'{common.TOPIC_JOINT_STATES}: no messages in the last period')
            self._joints_seen = self.received[-1]
        with self._cond:  # the worker ticks this monitor
            ok, rate, reason = self.out_monitor.check(now)
        values['observation_rate_hz'] = -1.0 if rate is None else rate
        if not ok and not problems:
            problems.append(f'observations: {reason} (ViT too slow, or the sync does not '
                            'match: see sync_* and sync_slop_s)')
        _, mean, peak = self.compute_ms.take()
        values.update({'vit_ms_mean': mean, 'vit_ms_max': peak})
        _, mean, peak = self.age_ms.take()
        values.update({'age_at_publish_ms_mean': mean, 'age_at_publish_ms_max': peak})
        values.update(self.counts)
        stats = {'matched': 0, 'dropped': 0, 'rejected': 0, **self.sync.stats}  # 0s at first
        values.update({f'sync_{k}': v for k, v in stats.items()})
        values['sync_queued'] = self.sync.queued()
        values['model_id'] = self.model_id
        if problems:
            self.rate_throttle('warning', 'rates', 'input rate low: ' + '; '.join(problems))
        self.diagnostics.publish('warn' if problems else 'ok', '; '.join(problems) or 'ok',
                                 values)


def main(args=None):
    return common.run_node(PerceptionNode, args)


if __name__ == '__main__':
    sys.exit(main())
