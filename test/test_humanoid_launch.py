"""The humanoid launch on the embedded sim, end to end, as real processes over DDS.

One launch serves the module (starting four model/sim processes takes a while on two
cores); the tests run in file order: flow and rates, joints, a live rate change through the
parameter services, the intent node killed and restarted, e-stop, and a clean shutdown.
"""
import signal
import time

import numpy as np
import pytest

from dial_ros import procs
from rosgraph import PYTHON, Probe, domain_id, pids_of, start, stop

pytestmark = [pytest.mark.ros, pytest.mark.slow]
INTENT_TIMEOUT = 1.0  # config/humanoid.yaml: controller.intent_timeout_s


@pytest.fixture(scope='module')
def graph(tmp_path_factory):
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    from dial_ros.msg import LatentTensor
    from dial_ros.nodes.qos import QOS_COMMAND, QOS_LATENT, QOS_SENSOR
    from dial_ros.topics import TOPIC_COMMAND, TOPIC_INTENT, TOPIC_JOINT_STATES, TOPIC_OBSERVATION
    domain = domain_id('humanoid')
    logs = tmp_path_factory.mktemp('launch')
    launch = start([PYTHON, '-m', 'dial_ros.launch_runner', 'dial_ros', 'humanoid.launch.py',
                    'duration:=300', 'control_rate_hz:=200'], domain, logs / 'launch.log')
    probe = Probe(domain)
    probe.record(TOPIC_COMMAND, Float64MultiArray, QOS_COMMAND,
                 lambda m: np.array(m.data))
    probe.record(TOPIC_INTENT, LatentTensor, QOS_LATENT,
                 lambda m: (m.header.stamp.sec + m.header.stamp.nanosec * 1e-9))
    probe.record(TOPIC_OBSERVATION, LatentTensor, QOS_LATENT, lambda m: None)
    _record_foresight_panels(probe)
    probe.record(TOPIC_JOINT_STATES, JointState, QOS_SENSOR,
                 lambda m: (list(m.name), np.array(m.position)))
    yield {'probe': probe, 'launch': launch, 'domain': domain, 'logs': logs}
    probe.close()
    stop(launch)
    procs.kill_in_domain('dial_ros.nodes.intent', domain)  # if a test left one behind


def log_tail(graph):
    return (graph['logs'] / 'launch.log').read_text()[-4000:]


def commands_between(probe, start, end):
    from dial_ros.topics import TOPIC_COMMAND
    rows = [m for t, m in probe.since(TOPIC_COMMAND, start) if t <= end]
    return np.array(rows)


def test_commands_intents_and_observations_flow_at_their_rates(graph):
    from dial_ros.topics import TOPIC_COMMAND, TOPIC_INTENT, TOPIC_JOINT_STATES, TOPIC_OBSERVATION
    probe = graph['probe']
    assert probe.wait_for(TOPIC_COMMAND, 50, timeout=150), log_tail(graph)
    assert probe.wait_for(TOPIC_INTENT, 3, timeout=60), log_tail(graph)
    start = time.monotonic()
    time.sleep(5.0)
    rates = {topic: len(probe.since(topic, start)) / 5.0 for topic in (
        TOPIC_COMMAND, TOPIC_INTENT, TOPIC_OBSERVATION,
        TOPIC_JOINT_STATES)}
    assert rates[TOPIC_COMMAND] > 150, rates
    assert rates[TOPIC_INTENT] > 1.5, rates
    assert rates[TOPIC_OBSERVATION] > 5, rates
    assert rates[TOPIC_JOINT_STATES] > 10, rates


def _record_foresight_panels(probe):
    from sensor_msgs.msg import Image

    from dial_ros.nodes.foresight_view import QOS_PANEL
    from dial_ros.topics import TOPIC_FORESIGHT_IMAGE
    probe.record(TOPIC_FORESIGHT_IMAGE, Image, QOS_PANEL, lambda m: (m.width, m.height))


def test_the_foresight_view_publishes_panels_with_the_sim(graph):
    from dial_ros.topics import TOPIC_FORESIGHT_IMAGE
    probe = graph['probe']
    assert probe.wait_for(TOPIC_FORESIGHT_IMAGE, 2, timeout=60), log_tail(graph)
    assert probe.since(TOPIC_FORESIGHT_IMAGE, 0)[-1][1] == (3 * 112, 112 + 14)


def test_sim_joints_move_and_stay_within_limits(graph):
    from dial_ros.embodiment import load_embodiment
    from dial_ros.topics import TOPIC_JOINT_STATES
    spec = load_embodiment('gr1_sim')
    probe = graph['probe']
    states = [m for _, m in probe.since(TOPIC_JOINT_STATES, 0)]
    order = [states[0][0].index(n) for n in spec.joint_names]
    q = np.array([pos[order] for _, pos in states])
    assert np.ptp(q, axis=0).max() > 0.01, 'the joints did not move'
    tol = 0.05  # the PD-controlled joints may overshoot a clamped target a little
    low = q.min(axis=0) - (spec.position_lower - tol)
    high = (spec.position_upper + tol) - q.max(axis=0)
    outside = {spec.joint_names[i]: (round(float(q[:, i].min()), 3),
                                     round(float(q[:, i].max()), 3))
               for i in np.flatnonzero((low < 0) | (high < 0))}
    assert not outside, f'joints outside their limits (min, max seen): {outside}'
    commands = commands_between(probe, 0, time.monotonic())
    assert np.all(commands >= spec.position_lower - 1e-9)
    assert np.all(commands <= spec.position_upper + 1e-9)


def test_control_rate_changes_live_through_parameter_services(graph):
    from dial_ros.topics import TOPIC_COMMAND
    probe = graph['probe']
    results = probe.set_parameters('controller', control_rate_hz=100)
    assert results[0].successful, results[0].reason
    time.sleep(1.0)
    rate = probe.rate(TOPIC_COMMAND, 4.0)
    assert 80 < rate < 120, rate
    bad = probe.set_parameters('controller', control_rate_hz=5000)
    assert not bad[0].successful
    probe.set_parameters('controller', control_rate_hz=200)


def test_killing_the_intent_node_holds_and_its_return_resumes(graph):
    from dial_ros.topics import TOPIC_INTENT
    probe, domain = graph['probe'], graph['domain']
    assert procs.kill_in_domain('dial_ros.nodes.intent', domain), 'intent node not found'
    killed = time.monotonic()
    time.sleep(INTENT_TIMEOUT + 1.5)
    window = commands_between(probe, time.monotonic() - 1.0, time.monotonic())
    assert len(window) > 50
    assert np.abs(np.diff(window, axis=0)).max() < 1e-9, 'commands must hold without intents'
    assert time.monotonic() - killed < INTENT_TIMEOUT + 5
    restarted = start([PYTHON, '-m', 'dial_ros.nodes.intent', '--ros-args', '-r',
                       '__node:=intent', '--params-file', 'config/humanoid.yaml',
                       '-p', 'instruction:=pick up the cube and lift it'],
                      domain, graph['logs'] / 'intent2.log')
    try:
        count = len(probe.since(TOPIC_INTENT, 0))
        assert probe.wait_for(TOPIC_INTENT, count + 3, timeout=90), (
            (graph['logs'] / 'intent2.log').read_text()[-3000:])
        time.sleep(2.0)
        window = commands_between(probe, time.monotonic() - 1.0, time.monotonic())
        assert np.abs(np.diff(window, axis=0)).max() > 1e-6, 'commands must resume'
    finally:
        stop(restarted)


def test_estop_stops_motion(graph):
    from std_msgs.msg import Bool

    from dial_ros.topics import TOPIC_ESTOP
    probe = graph['probe']
    pub = probe.node.create_publisher(Bool, TOPIC_ESTOP, 10)
    time.sleep(1.0)
    pub.publish(Bool(data=True))
    time.sleep(2.5)
    window = commands_between(probe, time.monotonic() - 2.0, time.monotonic())
    assert len(window) > 100
    assert np.abs(np.diff(window, axis=0)).max() < 1e-9, 'e-stop must hold position'
    pub.publish(Bool(data=False))


def test_sigint_shuts_everything_down_cleanly(graph):
    code = stop(graph['launch'], signal.SIGINT, timeout=40)
    assert code == 0, log_tail(graph)
    for module in ('dial_ros.nodes.sim', 'dial_ros.nodes.perception',
                   'dial_ros.nodes.controller'):
        assert not pids_of(module, graph['domain']), f'{module} still running'
