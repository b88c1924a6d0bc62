"""The demo recorder node and the bag CLI as real processes over DDS (own domain, localhost)."""
import json
import signal
import time

import numpy as np
import pytest
import yaml

import rosgraph

import dial_ros  # noqa: F401 - the Fast DDS profile (large images over shared memory)
from dial_ros import codecs, topics
from dial_ros.nodes import qos

pytestmark = pytest.mark.ros
TIMEOUT_S = 20.0


@pytest.fixture
def graph(tmp_path):
    """(domain, Probe with publishers) for one test; everything is torn down after."""
    with rosgraph.probe_graph(tmp_path.name, 'recorder_test', signal.SIGKILL, 5) as parts:
        yield parts


class Feeder:
    """Camera (30 Hz), joint states (100 Hz) and commands (50 Hz) from the test process."""

    def __init__(self, node):
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import Float64MultiArray

        self.node, self.Image = node, Image
        self.image = node.create_publisher(Image, topics.TOPIC_IMAGE, qos.QOS_SENSOR)
        self.joints = node.create_publisher(JointState, topics.TOPIC_JOINT_STATES,
                                            qos.QOS_SENSOR)
        self.commands = node.create_publisher(Float64MultiArray, topics.TOPIC_COMMAND,
                                              qos.QOS_COMMAND)
        self.classes = (Image, JointState, Float64MultiArray)
        self.frame = np.zeros((240, 320, 3), np.uint8)

    def wait_matched(self, pubs=None):
        deadline = time.monotonic() + TIMEOUT_S
        pubs = pubs or (self.image, self.joints, self.commands)
        while any(p.get_subscription_count() < 1 for p in pubs):
            assert time.monotonic() < deadline, 'recorder did not subscribe'
            time.sleep(0.05)

    def burst(self, seconds, camera_only=False):
        """Publish for ``seconds`` (paced at 100 Hz); counts per topic."""
        _, JointState, Float64MultiArray = self.classes
        counts = {topics.TOPIC_IMAGE: 0}
        if not camera_only:
            counts.update({topics.TOPIC_JOINT_STATES: 0, topics.TOPIC_COMMAND: 0})
        start = time.monotonic()
        for tick in range(int(seconds * 100)):
            now = time.time()
            if tick % 3 == 0:
                self.frame[0, 0, 0] = tick % 256
                self.image.publish(codecs.fill_image(self.Image(), self.frame, now, 'head'))
                counts[topics.TOPIC_IMAGE] += 1
            if not camera_only:
                self.joints.publish(JointState(name=['j'], position=[float(tick)]))
                counts[topics.TOPIC_JOINT_STATES] += 1
                if tick % 2 == 0:
                    self.commands.publish(Float64MultiArray(data=[float(tick)]))
                    counts[topics.TOPIC_COMMAND] += 1
            time.sleep(max(0.0, start + (tick + 1) * 0.01 - time.monotonic()))
        return counts


def call(probe, service):
    from std_srvs.srv import Trigger
    client = probe.node.create_client(Trigger, f'/recorder/{service}')
    assert client.wait_for_service(timeout_sec=TIMEOUT_S), service
    future = client.call_async(Trigger.Request())
    deadline = time.monotonic() + TIMEOUT_S
    while not future.done():
        assert time.monotonic() < deadline, f'{service}: no reply'
        time.sleep(0.01)
    probe.node.destroy_client(client)
    result = future.result()
    assert result.success, result.message
    return json.loads(result.message)


def bag_info(path):
    from dial_ros.bags import info
    summary = info(path)
    return {t['name']: t['count'] for t in summary['topics']}, summary['tags']


def wait_for(predicate, what):
    deadline = time.monotonic() + TIMEOUT_S
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def start_recorder(domain, tmp_path, log, **params):
    cmd = [rosgraph.PYTHON, '-m', 'dial_ros.nodes.recorder', '--ros-args']
    params = {'output_dir': str(tmp_path / 'demos'), 'task': 'lift', 'operator': 'ada',
              'reset_s': 0.0, 'max_segment_s': 1.0, 'chunk_s': 0.2,
              'expected_rates': "['/camera/head/image_raw=30.0']", **params}
    for key, value in params.items():
        cmd += ['-p', f'{key}:={value}']
    return rosgraph.start(cmd, domain, tmp_path / log)


def test_episodes_by_service_event_and_signal_then_kill_9_and_recover(graph, tmp_path):
    from dial_ros.msg import EpisodeEvent
    domain, probe, procs = graph
    feeder = Feeder(probe.node)
    events = probe.node.create_publisher(EpisodeEvent, '/recorder/episode_event',
                                         qos.QOS_COMMAND)
    procs.append(start_recorder(domain, tmp_path, 'recorder.log'))
    feeder.wait_matched()

    # 1: services; everything published while recording is in the bag (zero lost)
    path = call(probe, 'start')['path']
    published = feeder.burst(2.5)
    time.sleep(0.5)
    summary = call(probe, 'stop_success')
    counts, tags = bag_info(path)
    assert counts == published == summary['topics']
    assert tags['task'] == 'lift' and tags['operator'] == 'ada'
    assert tags['outcome'] == 'success' and tags['source'] == 'teleop'
    assert len(summary['segments']) >= 2                     # max_segment_s 1.0

    # 2: the event topic drives a human demonstration: camera only, no robot topics
    demos = tmp_path / 'demos'
    wait_for(lambda: events.get_subscription_count() > 0, 'event topic not matched')
    events.publish(EpisodeEvent(event='start', task='stack', source='human',
                                operator_name='bob'))
    wait_for(lambda: len(list(demos.glob('episode_0001_*/episode.yaml'))) == 1,
             'event start ignored')
    published = feeder.burst(1.0, camera_only=True)
    time.sleep(0.5)
    events.publish(EpisodeEvent(event='stop', outcome='failure'))
    second = next(demos.glob('episode_0001_*'))
    wait_for(lambda: (second / 'metadata.yaml').exists() and 'closed' in
             (second / 'metadata.yaml').read_text(), 'event stop ignored')
    counts, tags = bag_info(second)
    assert counts == published
    assert (tags['task'], tags['source'], tags['operator'], tags['outcome']) == \
        ('stack', 'human', 'bob', 'fail')

    # 3: SIGTERM finalises the open episode with outcome unknown
    path = call(probe, 'start')['path']
    published = feeder.burst(1.0)
    time.sleep(0.5)
    assert rosgraph.stop(procs.pop(), signal.SIGTERM) == 0
    counts, tags = bag_info(path)
    assert counts == published and tags['outcome'] == 'unknown'

    # 4: kill -9 mid-episode (started by the scripted expert's event) -> recover
    from std_msgs.msg import String

    from dial_ros.bags import recover
    procs.append(start_recorder(domain, tmp_path, 'recorder2.log', follow_expert='true'))
    expert = probe.node.create_publisher(String, '/expert/episode', qos.QOS_COMMAND)
    feeder.wait_matched()
    wait_for(lambda: expert.get_subscription_count() > 0, 'expert topic not matched')
    expert.publish(String(data=json.dumps({'event': 'start', 'seed': 7})))
    wait_for(lambda: len(list(demos.glob('episode_0003_*/episode.yaml'))) == 1,
             'expert start ignored')
    published = feeder.burst(2.0)
    time.sleep(0.8)                    # > chunk_s: the last chunk is on disk
    rosgraph.stop(procs.pop(), signal.SIGKILL)
    fourth = next(demos.glob('episode_0003_*'))
    result = recover(fourth)
    counts, tags = bag_info(fourth)
    assert counts == published == result['topics']
    assert tags['seed'] == '7' and tags['operator'] == 'ada' and tags['outcome'] == 'unknown'


def test_record_cli_then_play_keeps_timing_and_content(graph, tmp_path):
    from rosgraph_msgs.msg import Clock
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState

    from dial_ros.bags import read_messages
    domain, probe, procs = graph
    bag = tmp_path / 'cli_bag'
    record = rosgraph.start([rosgraph.PYTHON, '-m', 'dial_ros.bags', 'record', '-o', str(bag),
                             '/test/joints', '--tag', 'task=play_test'], domain,
                            tmp_path / 'record.log')
    procs.append(record)
    pub = probe.node.create_publisher(JointState, '/test/joints', qos.QOS_COMMAND)
    Feeder.wait_matched(None, [pub])
    gaps = np.tile([0.020, 0.030, 0.025, 0.045], 25)        # irregular, 22-50 Hz
    for i, gap in enumerate(gaps):
        pub.publish(JointState(name=['j'], position=[float(i)]))
        time.sleep(gap)
    time.sleep(0.5)
    assert rosgraph.stop(procs.pop(), signal.SIGINT) == 0
    counts, tags = bag_info(bag)
    assert counts == {'/test/joints': 100} and tags['task'] == 'play_test'
    log_ns = np.array([m[2] for m in read_messages(bag)])

    probe.node.destroy_publisher(pub)
    received = []         # (publish stamp, receive stamp, value): no executor jitter in it
    probe.node.create_subscription(
        JointState, '/test/joints',
        lambda m, i: received.append((i['source_timestamp'], i['received_timestamp'],
                                      m.position[0])), qos.QOS_COMMAND)
    probe.record('/clock', Clock, QoSProfile(depth=10,
                                             reliability=ReliabilityPolicy.BEST_EFFORT),
                 lambda m: m.clock.sec * 10**9 + m.clock.nanosec)
    play = rosgraph.start([rosgraph.PYTHON, '-m', 'dial_ros.bags', 'play', str(bag),
                           '--wait-for-subscribers', str(TIMEOUT_S), '--clock', '50'],
                          domain, tmp_path / 'play.log')
    procs.append(play)
    assert play.wait(TIMEOUT_S + 10) == 0
    time.sleep(0.2)
    assert [v for _, _, v in received] == [float(i) for i in range(100)]
    stamps = np.array([r[:2] for r in received])
    sent_ms, received_ms = (np.abs(np.diff(stamps, axis=0) - np.diff(log_ns)[:, None])
                            * 1e-6).T
    print('gap error ms p50/p90/max: sent', np.percentile(sent_ms, [50, 90, 100]).round(2),
          'received', np.percentile(received_ms, [50, 90, 100]).round(2))
    # the player's own timing, then what a subscriber sees (a busy 2-core machine)
    assert np.percentile(sent_ms, 50) < 1.0 and np.percentile(sent_ms, 90) < 4.0, sent_ms
    assert np.percentile(received_ms, 90) < 8.0 and received_ms.max() < 40.0, received_ms
    clock = [v for _, v in probe.received['/clock']]
    assert len(clock) > 50 and clock == sorted(clock)
    assert log_ns[0] <= clock[0] and clock[-1] <= log_ns[-1] + 50_000_000


def test_recorder_parameter_schema():
    """The node's schema: rates parse, bad ones are named (no process needed)."""
    from dial_ros.nodes.recorder import Params, parse_rates
    assert parse_rates(['/a=30', ' /b = 2.5']) == {'/a': 30.0, '/b': 2.5}
    with pytest.raises(ValueError, match='expected_rates'):
        parse_rates(['/a'])
    with pytest.raises(ValueError, match='topics'):
        Params(topics=[]).check()
    assert yaml.safe_dump(Params().topics)
