"""The sim and expert nodes as real processes over DDS (localhost discovery, own domain)."""
import json
import os
import time
import zlib

import numpy as np
import pytest

os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'  # before any rclpy context

from geometry_msgs.msg import PoseStamped  # noqa: E402
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import Bool, Float64MultiArray, String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from dial_ros.embodiment import load_embodiment  # noqa: E402
from dial_ros.nodes.qos import QOS_COMMAND, QOS_SENSOR  # noqa: E402
from dial_ros.topics import (TOPIC_COMMAND, TOPIC_IMAGE, TOPIC_JOINT_STATES,  # noqa: E402
                             TOPIC_OBJECT_POSE, TOPIC_SUCCESS)
from rosgraph import RosPeer, start_node, stop_node  # noqa: E402

DISCOVERY_S = 20.0  # node start-up (imports, scene load) plus discovery (>= 10 s)
pytestmark = pytest.mark.ros


def domain_for(tag):
    """A domain id in 100-230 of this run and tag."""
    return 100 + zlib.crc32(f'{os.getpid()}:{tag}:{time.time_ns()}'.encode()) % 131


def set_param(peer, node, name, value):
    """Set an int or str parameter of ``node`` through its SetParameters service."""
    if isinstance(value, int):
        value = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)
    else:
        value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
    request = SetParameters.Request(parameters=[Parameter(name=name, value=value)])
    return peer.call(SetParameters, f'/{node}/set_parameters', request).results[0]


def test_sim_node_topics_commands_reset_and_rate(tmp_path):
    """Joint states at the control rate, 224 px images, commands (good, clipped, bad), reset."""
    spec = load_embodiment('gr1_sim')
    names, lower, upper = spec.joint_names, spec.position_lower, spec.position_upper
    domain = domain_for('sim')
    log = tmp_path / 'sim.log'
    sim = start_node('sim', domain, log, control_rate_hz=20, camera_rate_hz=10, seed=3)
    peer = RosPeer(domain)
    try:
        joints = peer.collect(JointState, TOPIC_JOINT_STATES, QOS_SENSOR,
                              stamped=False)
        images = peer.collect(Image, TOPIC_IMAGE, QOS_SENSOR, stamped=False)
        success = peer.collect(Bool, TOPIC_SUCCESS, 10, stamped=False)
        poses = peer.collect(PoseStamped, TOPIC_OBJECT_POSE, 10, stamped=False)
        command = peer.node.create_publisher(Float64MultiArray, TOPIC_COMMAND,
                                             QOS_COMMAND)
        assert peer.spin_until(lambda: joints and images and success and poses
                               and command.get_subscription_count() > 0, DISCOVERY_S), \
            log.read_text()
        count = len(images)
        assert 16.0 <= peer.rate(joints, 2.0) <= 22.0
        assert 7.0 <= (len(images) - count) / 2.0 <= 11.5  # every 2nd step
        image = images[-1]
        assert (image.height, image.width, image.encoding) == (224, 224, 'rgb8')
        pixels = np.frombuffer(image.data, np.uint8)
        assert pixels.size == 224 * 224 * 3 and pixels.std() > 5.0
        assert list(joints[-1].name) == names and not success[-1].data
        assert poses[-1].header.frame_id == 'world' and poses[-1].pose.position.z > 0.5

        def position():
            return np.asarray(joints[-1].position)

        def send(values):
            return lambda: command.publish(Float64MultiArray(data=list(values)))

        start_q = position()
        head, elbow, pinky, roll = (names.index(n) for n in (
            'head_yaw', 'r_elbow_pitch', 'R_pinky_proximal_joint', 'r_shoulder_roll'))
        target = start_q.copy()
        target[[head, elbow, pinky]] += [0.3, 0.4, 0.8]
        peer.run(1.5, rate_hz=10.0, each=send(target))
        q = position()
        assert np.abs(q[[head, elbow]] - target[[head, elbow]]).max() < 0.05
        assert abs(q[pinky] - target[pinky]) < 0.15
        assert np.all(q >= lower - 0.02) and np.all(q <= upper + 0.02)

        clipped = target.copy()  # 0.01 rad past a limit: clipped and followed
        clipped[head], clipped[roll] = -0.3, upper[roll] + 0.01
        peer.run(1.0, rate_hz=10.0, each=send(clipped))
        assert abs(position()[head] + 0.3) < 0.05

        bad_nan, bad_range = clipped.copy(), clipped.copy()
        bad_nan[[head, elbow]] = [0.5, np.nan]
        bad_range[[head, elbow]] = [0.5, upper[elbow] + 2.0]
        count = len(joints)
        for values in (clipped[:5], bad_nan, bad_range):
            peer.run(0.5, rate_hz=10.0, each=send(values))
        assert abs(position()[head] + 0.3) < 0.05, 'a bad command was applied'
        assert len(joints) - count > 20 and sim.poll() is None

        assert not set_param(peer, 'sim', 'task', '{"bogus": 1}').successful
        assert set_param(peer, 'sim', 'task_preset', 'distractors').successful
        reply = peer.call(Trigger, '/sim/reset', Trigger.Request())
        info = json.loads(reply.message)
        assert reply.success and (info['seed'], info['episode']) == (4, 1)
        assert info['task_preset'] == 'distractors'
        peer.run(0.5)
        assert np.abs(position() - start_q).max() < 0.05  # back at the start pose, held

        assert set_param(peer, 'sim', 'control_rate_hz', 10).successful
        peer.run(0.3)
        assert 8.0 <= peer.rate(joints, 2.0) <= 11.0  # robust on a loaded 2-core machine
        assert not set_param(peer, 'sim', 'control_rate_hz', 500).successful
    finally:
        peer.close()
        code = stop_node(sim)
    text = log.read_text()
    assert code == 0 and 'Traceback' not in text, text
    assert 'clipped' in text and text.count('dropped') >= 3, text


def test_expert_drives_sim_to_success(tmp_path):
    """The expert node, through the command topic and ~/reset, lifts the cube (2 episodes)."""
    domain = domain_for('expert')
    sim = start_node('sim', domain, tmp_path / 'sim.log', seed=0)
    expert = start_node('expert', domain, tmp_path / 'expert.log', episodes=2,
                        episode_timeout_s=20.0)
    peer = RosPeer(domain)
    try:
        qos = QOS_COMMAND  # reliable, depth 10, as the events are published
        events = peer.collect(String, '/expert/episode', qos, stamped=False)
        success = peer.collect(Bool, TOPIC_SUCCESS, 10, stamped=False)

        def stops():
            return [e for e in map(json.loads, (m.data for m in events))
                    if e['event'] == 'stop']

        assert peer.spin_until(lambda: len(stops()) >= 2, DISCOVERY_S + 40.0), \
            (tmp_path / 'expert.log').read_text()
        outcomes = [e['outcome'] for e in stops()]
        assert outcomes.count('success') >= 1, outcomes
        assert any(m.data for m in success)
        ok = [e for e in stops() if e['outcome'] == 'success']
        assert all(e['duration_s'] < 20.0 and isinstance(e['seed'], int) for e in ok), ok
        starts = [json.loads(m.data) for m in events if '"start"' in m.data]
        assert 1 in [e['episode'] for e in starts]  # sent after episode 0's stop arrived
    finally:
        peer.close()
        codes = stop_node(expert), stop_node(sim)
    logs = {name: (tmp_path / f'{name}.log').read_text() for name in ('sim', 'expert')}
    assert codes == (0, 0), logs
    assert not any('Traceback' in text for text in logs.values()), logs
    assert 'dropped' not in logs['sim'], logs['sim']
