"""The controller node as a real process over DDS: lifecycle, rate, limits, ramp, hold, e-stop.

The lifecycle test runs its own process first; then one controller process serves the rest
of the module (its model takes ~5 s to build): those tests run in file order and each leaves
it tracking again. The test process is an rclpy node that
plays perception, intent and the robot: synthetic /joint_states, observation latents and
intents with the model id the controller loads.
"""
import contextlib
import os
import pathlib
import random
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from dial_ros import codecs, topics
from dial_ros.nodes import qos

pytestmark = pytest.mark.ros

ROOT = pathlib.Path(__file__).resolve().parent.parent
PYTHON = ROOT / '.venv' / 'bin' / 'python'
DOMAIN = random.Random(f'controller-{os.getpid()}').randint(100, 230)
EMBODIMENT = 'gr1_sim'
RATE, MAX_STEP, INTENT_TIMEOUT = 200, 0.004, 0.5
ARGS = {'control_rate_hz': RATE, 'max_step_rad': MAX_STEP, 'intent_timeout_s': INTENT_TIMEOUT,
        'ramp_time_s': 0.5, 'embodiment': EMBODIMENT, 'seed': 0}


class Harness:
    """Test node: publishes the controller's inputs, records its commands and logs."""

    def __init__(self, rclpy, model_id, token_shape, spec, domain=DOMAIN):
        from diagnostic_msgs.msg import DiagnosticArray
        from lifecycle_msgs.srv import ChangeState, GetState
        from rcl_interfaces.msg import Log
        from rcl_interfaces.srv import SetParameters
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Bool, Float64MultiArray
        from std_srvs.srv import SetBool
        from trajectory_msgs.msg import JointTrajectory

        from dial_ros.msg import LatentTensor
        self.LatentTensor, self.JointState = LatentTensor, JointState
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = rclpy.create_node('controller_test', context=self.context)
        self.model_id, self.token_shape, self.spec = model_id, token_shape, spec
        mid = (spec.position_lower + spec.position_upper) / 2
        self.pose = mid + 0.1 * (spec.position_upper - mid)
        # the robot reports more joints than the embodiment, in its own order
        self.names = list(reversed(spec.joint_names)) + ['joint_not_in_the_embodiment']
        self.positions = list(reversed(self.pose.tolist())) + [0.3]
        self.intents_on, self.observations_on = False, True
        self.commands, self.logs, self.lock = [], [], threading.Lock()
        self.sent_at = []  # the publisher's clock (source timestamp) of each command
        n = self.node
        self.js_pub = n.create_publisher(JointState, topics.TOPIC_JOINT_STATES,
                                         qos.QOS_SENSOR)
        self.obs_pub = n.create_publisher(LatentTensor, topics.TOPIC_OBSERVATION,
                                          qos.QOS_LATENT)
        self.intent_pub = n.create_publisher(LatentTensor, topics.TOPIC_INTENT,
                                             qos.QOS_LATENT)
        self.estop_pub = n.create_publisher(Bool, topics.TOPIC_ESTOP, 10)
        self.Bool = Bool
        # the command QoS (reliable, keep last 10) with a deep reader queue: at 500 Hz ten
        # messages are 20 ms, and a garbage collection in this busy test process can stall
        # the executor that long; a message dropped here would look like a double step
        deep = QoSProfile(depth=1000, reliability=qos.QOS_COMMAND.reliability,
                          history=qos.QOS_COMMAND.history)
        n.create_subscription(Float64MultiArray, topics.TOPIC_COMMAND, self._on_command, deep)
        n.create_subscription(Log, '/rosout', self._on_log, 100)
        n.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 10)
        self.other_forms = {}
        n.create_subscription(JointTrajectory, topics.TOPIC_TRAJECTORY,
                              lambda m: self.other_forms.update(trajectory=m), 10)
        n.create_subscription(JointState, topics.TOPIC_COMMAND_STATE,
                              lambda m: self.other_forms.update(state=m), 10)
        self.diagnostics = None
        self.params = n.create_client(SetParameters, '/controller/set_parameters')
        self.estop_srv = n.create_client(SetBool, '/controller/estop')
        self.change_state = n.create_client(ChangeState, '/controller/change_state')
        self.get_state = n.create_client(GetState, '/controller/get_state')
        self.SetBool = SetBool
        n.create_timer(0.01, self._publish_joints)
        n.create_timer(0.05, self._publish_observation)
        n.create_timer(0.2, self._publish_intent)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(n)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def latent(self, tensor=None, **fields):
        tensor = np.zeros(self.token_shape, np.float32) if tensor is None else tensor
        now = codecs.now_sec(self.node)
        fields.setdefault('model_id', self.model_id)
        return codecs.fill_latent(self.LatentTensor(), tensor, now, valid=True, **fields)

    def _publish_joints(self):
        msg = self.JointState(name=self.names, position=self.positions)
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.js_pub.publish(msg)

    def _publish_observation(self):
        if not self.observations_on:
            return
        rng = np.random.default_rng()
        self.obs_pub.publish(self.latent(rng.standard_normal(self.token_shape, np.float32)))

    def _publish_intent(self):
        if self.intents_on:
            rng = np.random.default_rng()
            self.intent_pub.publish(self.latent(rng.standard_normal(self.token_shape,
                                                                    np.float32), valid_for=2.0))

    def _on_command(self, msg, info):
        # arrival time in the DDS reader, not when this executor got round to the callback
        with self.lock:
            self.commands.append((info['received_timestamp'] * 1e-9, np.array(msg.data)))
            self.sent_at.append(info['source_timestamp'] * 1e-9)

    def _on_log(self, msg):
        if msg.name == 'controller':
            with self.lock:
                self.logs.append(msg.msg)

    def _on_diagnostics(self, msg):
        for status in msg.status:
            if status.name == '/controller':
                self.diagnostics = (status.level, status.message,
                                    {kv.key: kv.value for kv in status.values})

    def record(self, seconds):
        """Return the commands received during the next ``seconds``: (times, N x J)."""
        start = time.time()
        time.sleep(seconds)
        time.sleep(0.05)  # let the executor catch up
        with self.lock:
            got = [(t, c) for t, c in self.commands if start <= t <= start + seconds]
        if not got:
            return np.zeros(0), np.zeros((0, len(self.pose)))
        return np.array([t for t, _ in got]), np.stack([c for _, c in got])

    def call(self, client, request, timeout=10.0):
        assert client.wait_for_service(timeout_sec=timeout), client.srv_name
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert future.done(), f'{client.srv_name}: no answer in {timeout} s'
        return future.result()

    def set_param(self, name, value):
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter
        request = SetParameters.Request(parameters=[Parameter(name, value=value)
                                                    .to_parameter_msg()])
        return self.call(self.params, request).results[0]

    def transition(self, name):
        """Request a lifecycle transition ('configure', 'activate', ...); its success."""
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState
        request = ChangeState.Request(
            transition=Transition(id=getattr(Transition, f'TRANSITION_{name.upper()}')))
        return self.call(self.change_state, request, timeout=120.0).success  # loads a model

    def state(self):
        from lifecycle_msgs.srv import GetState
        return self.call(self.get_state, GetState.Request(), 120.0).current_state.label

    def close(self):
        for timer in list(self.node.timers):  # no publishing into a shut-down context
            timer.cancel()
        self.executor.shutdown(timeout_sec=2.0)
        self.thread.join(timeout=2.0)
        self.node.destroy_node()
        self.context.try_shutdown()


@contextlib.contextmanager
def controller(log_path, domain=DOMAIN, **extra):
    """A controller process with ARGS (and ``extra``) and a Harness on ``domain``."""
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST',
               ROS_DOMAIN_ID=str(domain), OMP_NUM_THREADS='1')
    args = [f'{k}:={v}' for k, v in dict(ARGS, **extra).items()]
    cmd = [str(PYTHON if PYTHON.exists() else sys.executable), '-m',
           'dial_ros.nodes.controller', '--ros-args'] + [x for a in args for x in ('-p', a)]
    log = open(log_path, 'w')
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    h = None
    try:
        import rclpy

        from dial_ros.model.default import load_model
        from dial_ros.model.policy import DialPolicy
        model, model_id = load_model('', EMBODIMENT, 0)
        policy = DialPolicy(model, EMBODIMENT)
        h = Harness(rclpy, model_id, policy.token_shape, policy.embodiment, domain)
        h.proc, h.log_path = proc, log_path
        yield h
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        if h is not None:
            h.close()


@pytest.fixture(scope='module')
def harness(tmp_path_factory):
    log_path = tmp_path_factory.mktemp('controller') / 'controller.log'
    with controller(log_path) as h:
        proc = h.proc
        deadline = time.monotonic() + 40  # process start (~6 s) + discovery (<= 10 s)
        while time.monotonic() < deadline and not h.commands:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            time.sleep(0.1)
        assert h.commands, 'no commands within 40 s:\n' + log_path.read_text()[-3000:]
        yield h


def check_safe(h, cmds):
    lower, upper = h.spec.position_lower, h.spec.position_upper
    assert np.all(cmds >= lower - 1e-9) and np.all(cmds <= upper + 1e-9)
    if len(cmds) > 1:
        assert np.abs(np.diff(cmds, axis=0)).max() <= MAX_STEP + 1e-9


def moving(cmds):
    return len(cmds) > 1 and np.abs(np.diff(cmds, axis=0)).max() > 1e-6


def wait_for_log(h, text, timeout=30.0):
    end = time.monotonic() + timeout
    while text not in h.log_path.read_text():
        if time.monotonic() > end:
            return False
        time.sleep(0.1)
    return True


def test_lifecycle_commands_only_while_active_and_reactivation_starts_at_the_pose(tmp_path):
    """Its own process (autostart false), before the module's controller starts."""
    domain = 100 + (DOMAIN - 100 + 1) % 131
    with controller(tmp_path / 'controller.log', domain, autostart='false') as h:
        assert h.state() == 'unconfigured'
        h.intents_on = True
        missing = '/nonexistent/dial_checkpoint'
        assert h.set_param('checkpoint', missing).successful
        assert not h.transition('configure'), 'configured without a checkpoint'
        assert h.state() == 'unconfigured' and h.proc.poll() is None
        assert wait_for_log(h, f"configure failed: cannot load the system1 part of the "
                            f"model (checkpoint "
                            f"'{missing}'"), h.log_path.read_text()
        assert h.set_param('checkpoint', '').successful
        assert not h.commands, 'commanded while unconfigured'

        assert h.transition('configure') and h.state() == 'inactive'
        time.sleep(1.5)
        assert not h.commands, 'commanded while inactive'
        last = None
        for cycle in range(2):  # activate, deactivate, activate again, deactivate
            asked = time.time()
            assert h.transition('activate') and h.state() == 'active'
            end = time.monotonic() + 30.0
            while time.monotonic() < end and not moving(h.record(1.0)[1]):
                pass
            with h.lock:  # by send time: a loaded machine can deliver an old command late
                since = np.stack([c for (_, c), sent in zip(h.commands, h.sent_at)
                                  if sent >= asked])
            # a fresh start: the first command is the measured pose or one safe step from it,
            # never the last command before the deactivation, nor a jump into a chunk
            assert np.abs(since[0] - h.pose).max() <= MAX_STEP + 1e-9, (cycle, since[0])
            assert moving(since), f'not tracking after activation {cycle}'
            check_safe(h, since)
            if last is not None:
                gap = np.abs(last - h.pose).max()
                print(f'controller: re-activation started at the pose; the last command '
                      f'before it was {gap:.3f} rad away (max step {MAX_STEP})')
                assert gap > MAX_STEP, 'the test needs a last command away from the pose'
            assert h.transition('deactivate')
            inactive = time.time()  # its answer comes once the command thread has stopped
            assert h.state() == 'inactive'
            time.sleep(1.5)
            with h.lock:  # judged by send time: a loaded machine can deliver some late
                late = [t - inactive for t in h.sent_at if t > inactive]
                last = h.commands[-1][1]
            assert not late, f'commanded while inactive (cycle {cycle}): {late[:5]} s after'
        assert h.transition('cleanup') and h.state() == 'unconfigured'
        assert wait_for_log(h, 'cleaned up: model freed')
        assert h.proc.poll() is None


def test_a_chunk_follows_each_due_observation_within_one_command_period(tmp_path):
    """Event-driven inference: a new observation (with a fresh intent) gets its chunk at once.

    Its own process: 5 Hz commands (a 0.2 s period) and chunk_rate_hz 2 (frames closer than
    0.45 s to the last chunk's frame are skipped). Observations are sent by hand 0.3 s apart:
    frames 0, 2, 4 get a chunk, each well within one command period of the frame being sent;
    a timer at 2 Hz would take up to 0.5 s and pick frames by its own phase.
    """
    from dial_ros.msg import ActionChunk
    domain = 100 + (DOMAIN - 100 + 2) % 131
    period = 0.2
    with controller(tmp_path / 'controller.log', domain, control_rate_hz=5,
                    chunk_rate_hz=2.0) as h:
        h.observations_on, h.intents_on = False, True
        chunks = []
        h.node.create_subscription(
            ActionChunk, topics.TOPIC_CHUNK,
            lambda m: chunks.append((time.time(), codecs.stamp_to_sec(m.observation_stamp))),
            qos.QOS_LATENT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (h.commands and h.diagnostics):
            assert h.proc.poll() is None, h.log_path.read_text()[-3000:]
            time.sleep(0.1)
        time.sleep(1.0)  # intents flowing, matched
        sent = []
        rng = np.random.default_rng(0)
        for _ in range(6):
            msg = h.latent(rng.standard_normal(h.token_shape, np.float32))
            h.obs_pub.publish(msg)
            sent.append((time.time(), codecs.stamp_to_sec(msg.header.stamp)))
            time.sleep(0.3)
        time.sleep(0.5)
        stamps = [stamp for _, stamp in sent]
        got = {stamp: arrived for arrived, stamp in chunks}
        assert sorted(got) == [stamps[0], stamps[2], stamps[4]], (
            [round(s - stamps[0], 3) for s in sorted(got)], h.log_path.read_text()[-2000:])
        delays = [got[stamp] - at for at, stamp in sent if stamp in got]
        print(f'controller: observation sent -> its chunk received: '
              f'{[round(d * 1e3, 1) for d in delays]} ms (command period {period * 1e3} ms)')
        assert max(delays) < period, delays


def test_starts_at_measured_pose_then_tracks_within_limits(harness):
    h = harness
    with h.lock:
        first = h.commands[0][1]
    # hold_on_start: before any intent the command is the measured pose (mapped by name)
    np.testing.assert_allclose(first, h.pose, atol=1e-9)
    h.intents_on = True
    times, cmds = h.record(3.0)
    rate = (len(times) - 1) / (times[-1] - times[0])
    assert 0.8 * RATE < rate < 1.1 * RATE, rate
    assert moving(cmds)
    # everything since the first command: hold, then a ramp out of the pose with no jump
    with h.lock:
        check_safe(h, np.stack([c for _, c in h.commands]))
    level, message, values = h.diagnostics
    assert values['model_id'] == h.model_id and int(values['chunks']) > 0, values
    assert float(values['send_target_hz']) == RATE and 'send_jitter_p99_ms' in values
    assert values['safety_state'] in ('ok', 'ramping'), (message, values)


def test_holds_when_intents_stop_and_resumes(harness):
    h = harness
    h.intents_on = False
    stopped = time.time()
    times, cmds = h.record(INTENT_TIMEOUT + 1.5)
    changed = np.flatnonzero(np.abs(np.diff(cmds, axis=0)).max(axis=1) > 0)
    last_change = times[changed[-1] + 1] - stopped if changed.size else 0.0
    assert last_change < INTENT_TIMEOUT + 0.3, last_change
    assert not moving(cmds[times > stopped + INTENT_TIMEOUT + 0.3])
    assert len(cmds[times > stopped + INTENT_TIMEOUT + 0.3]) > 0.8 * RATE  # keeps holding
    h.intents_on = True
    times, cmds = h.record(1.5)
    assert moving(cmds)
    check_safe(h, cmds)


@pytest.mark.parametrize('via', ['topic', 'service'])
def test_estop_holds_until_released(harness, via):
    h = harness

    def estop(on):
        if via == 'topic':
            h.estop_pub.publish(h.Bool(data=on))
        else:
            assert h.call(h.estop_srv, h.SetBool.Request(data=on)).success

    estop(True)
    time.sleep(0.3)
    times, cmds = h.record(1.0)
    assert len(cmds) > 0.8 * RATE and not moving(cmds)
    estop(False)
    time.sleep(0.5)
    times, cmds = h.record(1.0)
    assert moving(cmds)
    check_safe(h, cmds)


def test_control_rate_changes_live_and_rejects_out_of_range(harness):
    h = harness
    assert h.set_param('control_rate_hz', 500).successful
    time.sleep(0.3)
    times, cmds = h.record(2.0)
    rate = (len(times) - 1) / (times[-1] - times[0])
    assert 0.8 * 500 < rate < 1.1 * 500, rate
    check_safe(h, cmds)
    result = h.set_param('control_rate_hz', 5000)
    assert not result.successful and result.reason
    assert h.set_param('control_rate_hz', RATE).successful
    time.sleep(0.3)
    times, _ = h.record(1.0)
    rate = (len(times) - 1) / (times[-1] - times[0])
    assert 0.8 * RATE < rate < 1.1 * RATE, rate


def test_dry_run_publishes_nothing(harness):
    h = harness
    assert h.set_param('dry_run', True).successful
    time.sleep(0.2)
    times, _ = h.record(1.0)
    assert len(times) == 0
    assert h.set_param('dry_run', False).successful
    times, _ = h.record(1.0)
    assert len(times) > 0.8 * RATE


def test_all_output_forms(harness):
    h = harness
    forms = ['float64_multi_array', 'joint_trajectory', 'joint_state']
    assert h.set_param('output_forms', forms).successful
    deadline = time.monotonic() + 15  # new publishers: discovery
    while time.monotonic() < deadline and len(h.other_forms) < 2:
        time.sleep(0.1)
    trajectory, state = h.other_forms['trajectory'], h.other_forms['state']
    assert trajectory.joint_names == h.spec.joint_names and len(trajectory.points) == 1
    assert len(trajectory.points[0].positions) == len(h.spec.joint_names)
    assert state.name == h.spec.joint_names and len(state.position) == len(state.name)
    result = h.set_param('output_forms', ['float64_multi_array', 'bogus'])
    assert not result.successful and 'output_forms' in result.reason
    assert h.set_param('output_forms', forms[:1]).successful


def test_bad_inputs_are_logged_and_dropped(harness):
    h = harness
    bad = np.zeros(h.token_shape, np.float32)
    bad[0, 0] = np.nan
    h.intent_pub.publish(h.latent(bad, valid_for=2.0))
    h.obs_pub.publish(h.latent(model_id='some-other-model'))
    joints = h.JointState(name=h.names[1:], position=h.positions[1:])
    joints.header.stamp = h.node.get_clock().now().to_msg()
    h.js_pub.publish(joints)
    times, cmds = h.record(1.5)
    assert h.proc.poll() is None
    with h.lock:
        logs = '\n'.join(h.logs)
    assert 'intent dropped' in logs and 'NaN' in logs, logs
    assert 'observation dropped' in logs and 'some-other-model' in logs, logs
    assert 'joint_state dropped' in logs and 'missing joints' in logs, logs
    assert len(cmds) > 0.8 * 1.5 * RATE
    check_safe(h, cmds)


def test_each_problem_is_logged_and_holds_are_logged_once_each_way(harness):
    """Throttling is per problem (a NaN intent does not hide a wrong model id a moment later);
    entering and leaving the stale hold are logged once each."""
    h = harness
    h.intents_on = True
    time.sleep(1.0)
    with h.lock:
        start = len(h.logs)
    bad = np.zeros(h.token_shape, np.float32)
    bad[0, 0] = np.nan
    h.intent_pub.publish(h.latent(bad, valid_for=2.0))
    time.sleep(0.2)
    h.intent_pub.publish(h.latent(model_id='another-model', valid_for=2.0))
    time.sleep(0.2)
    h.intent_pub.publish(h.latent(np.zeros((3, 5), np.float32), valid_for=2.0))
    h.intents_on = False
    time.sleep(INTENT_TIMEOUT + 1.0)
    h.intents_on = True
    time.sleep(1.0)
    with h.lock:
        logs = h.logs[start:]
    dropped = [line for line in logs if line.startswith('intent dropped')]
    assert any('NaN' in line for line in dropped), logs
    assert any('another-model' in line for line in dropped), logs
    assert any('shape' in line for line in dropped), logs
    assert sum(line.startswith('holding the last command') for line in logs) == 1, logs
    assert sum(line.startswith('inputs fresh') for line in logs) == 1, logs


def test_no_command_ever_steps_more_than_max_step(harness):
    """Tracking, e-stop latch, the arm moved during the stop, release, stale hold, resume:
    no two consecutive commands differ by more than max_step_rad."""
    h = harness
    h.intents_on = True
    time.sleep(1.5)  # tracking: the command has left the measured pose
    started = time.time()
    h.estop_pub.publish(h.Bool(data=True))
    time.sleep(0.3)
    spec = h.spec
    mid = (spec.position_lower + spec.position_upper) / 2
    moved = mid - 0.1 * (spec.position_upper - mid)  # someone moved the arm meanwhile
    h.positions = list(reversed(moved.tolist())) + [0.3]
    time.sleep(0.2)
    h.estop_pub.publish(h.Bool(data=False))
    time.sleep(1.5)
    h.intents_on = False
    time.sleep(INTENT_TIMEOUT + 0.5)
    h.intents_on = True
    time.sleep(1.5)
    with h.lock:
        cmds = np.stack([c for t, c in h.commands if t >= started])
    h.positions = list(reversed(h.pose.tolist())) + [0.3]
    assert len(cmds) > 0.8 * RATE * 4
    assert np.abs(cmds[-1] - cmds[0]).max() > 10 * MAX_STEP  # it did move
    check_safe(h, cmds)
