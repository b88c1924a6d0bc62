"""Operator takeover: the controller yields to a teleop source, the recorder tags the segments.

Real processes over DDS: a controller (the bundled model) fed by the test process, which
also plays the teleop source; a recorder whose bag is read back with the project's own
reader (dial_ros.bags); then the conversion keeps the segments with their weight.
"""
import json
import time

import numpy as np
import pytest

import rosgraph
from test_dataset_bags import robot_tags, T0, write_episode
from test_launch_settings import launch_plan
from test_node_controller import check_safe, controller, moving, RATE, wait_for_log
from test_recorder import bag_info, call, Feeder, start_recorder, wait_for

from dial_ros import topics
from dial_ros.nodes import qos

pytestmark = pytest.mark.ros
TIMEOUT_S = 40.0


def _wait(predicate, what, timeout=TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_take_over_forwards_teleop_within_limits_then_hands_back_with_a_ramp(tmp_path):
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Float64MultiArray, Header, String
    from std_srvs.srv import SetBool

    from dial_ros.msg import Surprise
    domain = rosgraph.domain_id('takeover-controller')
    with controller(tmp_path / 'controller.log', domain) as h:
        _wait(lambda: h.commands, 'no commands:\n' + h.log_path.read_text()[-2000:])
        sources, teleop_on = [], [True]
        h.node.create_subscription(String, topics.TOPIC_COMMAND_SOURCE,
                                   lambda m: sources.append(m.data), qos.QOS_LATCHED)
        lower, upper = h.spec.position_lower, h.spec.position_upper
        target = np.clip(h.pose + 0.1, lower, upper)
        teleop = h.node.create_publisher(Float64MultiArray, topics.TOPIC_TELEOP,
                                         qos.QOS_COMMAND)
        h.node.create_timer(0.02, lambda: teleop_on[0] and teleop.publish(
            Float64MultiArray(data=target.tolist())))
        take_over = h.node.create_client(SetBool, '/controller/take_over')
        _wait(lambda: sources == ['policy'], f'latched command source: {sources}')
        h.intents_on = True
        _, cmds = h.record(1.5)
        assert moving(cmds)   # the policy drives

        reply = h.call(take_over, SetBool.Request(data=True))
        assert reply.success and 'teleop' in reply.message, reply.message
        _, cmds = h.record(2.5)
        check_safe(h, cmds)
        # the controller forwards the teleop target (reached under the step limit)
        np.testing.assert_allclose(cmds[-1], target, atol=1e-9)
        _wait(lambda: sources[-1:] == ['teleop'], f'command source: {sources}')
        _wait(lambda: h.diagnostics and h.diagnostics[2].get('command_source') == 'teleop',
              f'diagnostics: {h.diagnostics}')

        # the e-stop still wins over the teleop source; the release ramps back to it
        assert h.call(h.estop_srv, h.SetBool.Request(data=True)).success
        target[:] = np.clip(h.pose - 0.1, lower, upper)
        time.sleep(0.3)
        _, cmds = h.record(1.0)
        assert len(cmds) > 0.8 * RATE and not moving(cmds)
        assert h.call(h.estop_srv, h.SetBool.Request(data=False)).success
        _, cmds = h.record(2.5)
        check_safe(h, cmds)
        np.testing.assert_allclose(cmds[-1], target, atol=1e-9)
        # a malformed teleop message is dropped with a reason naming the topic
        teleop.publish(Float64MultiArray(data=[0.0, 1.0]))
        assert wait_for_log(h, 'teleop dropped: /dial/teleop/joint_commands: expected')

        teleop_on[0] = False   # a silent teleop source: hold, never follow the policy
        time.sleep(1.0)
        _, cmds = h.record(1.0)
        assert len(cmds) > 0.8 * RATE and not moving(cmds)
        np.testing.assert_allclose(cmds[-1], target, atol=1e-9)

        # hand back with a long ramp: the stream walks from the teleop target to the
        # measured pose first (like an e-stop release), then eases into the policy's chunks
        assert h.set_param('ramp_time_s', 5.0).successful
        reply = h.call(take_over, SetBool.Request(data=False))
        assert reply.success and 'policy' in reply.message, reply.message
        _, cmds = h.record(1.5)
        assert moving(cmds)
        off_pose = np.abs(cmds - h.pose).max(axis=1)
        assert off_pose.min() < 0.25 * np.abs(target - h.pose).max(), off_pose.min()
        _wait(lambda: sources[-1:] == ['policy'], f'command source: {sources}')
        # no step larger than the limit anywhere: policy, switch, teleop, hold, hand-back
        with h.lock:
            check_safe(h, np.stack([c for _, c in h.commands]))
        assert 'yielded to the teleop source' in h.log_path.read_text()

        # surprise_takeover_s: ERROR from the surprise monitor for that long (intent stamps,
        # without a break) yields to the operator; a shorter run of ERRORs does not
        surprise = h.node.create_publisher(Surprise, topics.TOPIC_SURPRISE, 10)
        assert h.set_param('surprise_takeover_s', 0.5).successful
        for i, level in enumerate((2, 2, 2, 0, 2, 2, 2)):   # 0.4 s of ERROR at most
            stamp = Time(sec=100 + i // 5, nanosec=(i % 5) * 200_000_000)
            surprise.publish(Surprise(header=Header(stamp=stamp), level=level, surprise=9.0))
            time.sleep(0.05)
        time.sleep(1.0)
        assert sources[-1] == 'policy', sources
        for i in range(4):   # 0.6 s of ERROR
            stamp = Time(sec=200, nanosec=i * 200_000_000)
            surprise.publish(Surprise(header=Header(stamp=stamp), level=2, surprise=9.0))
            time.sleep(0.05)
        _wait(lambda: sources[-1:] == ['teleop'], f'command source: {sources}')
        assert wait_for_log(h, 'surprise ERROR for 0.60 s')


@pytest.fixture
def graph(tmp_path):
    with rosgraph.probe_graph(tmp_path.name, 'takeover_test', timeout=10) as parts:
        yield parts


def test_recorder_tags_intervention_segments_and_records_the_switches(graph, tmp_path):
    from std_msgs.msg import String

    from dial_ros.bags.reader import scan_messages
    from dial_ros.bags.types import default_types
    domain, probe, procs = graph
    feeder = Feeder(probe.node)
    source = probe.node.create_publisher(String, topics.TOPIC_COMMAND_SOURCE, qos.QOS_LATCHED)
    source.publish(String(data='policy'))
    procs.append(start_recorder(domain, tmp_path, 'recorder.log'))
    feeder.wait_matched()
    wait_for(lambda: source.get_subscription_count() >= 1, 'recorder did not subscribe')

    plain = call(probe, 'start')['path']   # no takeover: the source tag stays
    feeder.burst(0.5)
    call(probe, 'stop_success')
    assert bag_info(plain)[1]['source'] == 'teleop'

    path = call(probe, 'start')['path']
    feeder.burst(0.5)
    source.publish(String(data='teleop'))
    feeder.burst(1.0)
    source.publish(String(data='policy'))
    feeder.burst(0.5)
    call(probe, 'stop_success')
    _, tags = bag_info(path)
    assert tags['source'] == 'intervention' and tags['interventions'] == '1', tags
    (start, end), = json.loads(tags['intervention_segments'])
    assert 0.0 < end - start < 30.0
    types = default_types()
    switches = [types.deserialize(raw, msgtype).data for _, msgtype, _, raw in
                scan_messages(path, [topics.TOPIC_COMMAND_SOURCE])]
    assert switches == ['teleop', 'policy']


def test_convert_keeps_intervention_segments_with_their_weight(tmp_path):
    from dial_ros.data.convert import convert
    from dial_ros.data.dataset import DialDataset
    bags = tmp_path / 'bags'
    write_episode(bags / 'demo', robot_tags(), frames=30)
    tags = dict(robot_tags(source='intervention'), interventions='2',
                intervention_segments=json.dumps([[T0 + 0.2, T0 + 0.6], [T0 + 1.0, T0 + 1.4]]))
    write_episode(bags / 'dagger', tags, frames=30)
    write_episode(bags / 'rollout', robot_tags(source='policy'), frames=30)
    summary = convert([str(bags)], tmp_path / 'ds', skip_sources=('policy',),
                      intervention_weight=3.0)
    assert [b for b, _ in summary.skipped] == ['rollout']
    assert sorted(b for b, _, _ in summary.converted) == ['dagger', 'dagger', 'demo']
    ds = DialDataset(tmp_path / 'ds', horizon=4, future_offset=4)
    lengths = {b: n for b, _, n in summary.converted if b == 'dagger'}
    assert 0 < min(lengths.values()) <= 9   # 0.4 s at 20 fps, not the whole 1.5 s
    weights = ds.sample_weights()
    by_episode = {e: set(weights[ds._episode_of[ds._samples] == e]) for e in ds.episodes}
    assert sorted(ds.episode_weight.values()) == [1.0, 3.0, 3.0]
    assert sorted(w for ws in by_episode.values() for w in ws) == [1.0, 3.0, 3.0]
    with pytest.raises(ValueError, match='intervention_weight'):
        convert([str(bags)], tmp_path / 'ds2', intervention_weight=0.0)


def test_safety_resume_ramps_from_the_last_command_or_from_the_measured_pose():
    from dial_ros.core.safety import SafetyFilter, SafetyLimits
    limits = SafetyLimits(np.full(3, -1.0), np.full(3, 1.0), 10.0, 0.01)
    measured, t = np.zeros(3), [0.0]

    def run(target, ticks):
        out = []
        for _ in range(ticks):
            t[0] += 0.01
            out.append(f.filter(np.full(3, target), measured, t[0], 0.0)[0])
        return np.array(out)
    f = SafetyFilter(limits, ramp_time_s=0.5, nominal_period_s=0.01)
    assert run(0.5, 200)[-1] == pytest.approx(np.full(3, 0.5))
    f.resume(from_measured=False)   # a new source takes over: ease from the last command
    cmds = run(0.5, 100)
    assert np.abs(cmds - 0.5).max() < 1e-12
    f.resume()                      # hand-back: back to the measured pose first
    cmds = run(0.5, 100)
    assert np.abs(np.diff(cmds, axis=0)).max() <= 0.01 + 1e-9 and cmds.min() < 0.3


def test_launch_driver_dagger_runs_the_policy_with_the_expert_as_its_teleop_source():
    plan = launch_plan('driver:=dagger', 'record:=true')
    assert {'controller', 'expert', 'recorder'} <= set(plan)
    assert plan['expert'][1] == {'teleop': True, 'take_over': True,
                                 'takeover_delay_min_s': 1.0, 'takeover_delay_max_s': 8.0}
    assert plan['recorder'][1]['follow_expert'] is True
    assert plan['recorder'][1]['source'] == 'policy'
