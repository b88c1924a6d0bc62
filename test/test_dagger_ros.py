"""A small DAgger round through ROS: the launch with driver:=dagger, then the conversion.

The bundled policy drives the embedded sim; after a short random delay the scripted expert
takes over through /controller/take_over (the controller forwards its teleop targets),
finishes the episode and hands back; the recorder tags the intervention segments. Checked:
only the controller commands the joints, no command steps more than the safety limit
across the switches, each episode's policy part starts from the reset pose (the controller
is deactivated over the reset, not left stepping from the previous episode's final pose), and
the bags convert into intervention episodes with their weight.
"""
import time

import numpy as np
import pytest
import yaml

from rosgraph import PYTHON, Probe, ROOT, domain_id, start, stop

pytestmark = [pytest.mark.ros, pytest.mark.slow]
EPISODES = 2


def test_dagger_round_through_ros_records_weighted_intervention_episodes(tmp_path):
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray, String

    from dial_ros.bags import info
    from dial_ros.data.convert import convert
    from dial_ros.data.dataset import DialDataset
    from dial_ros.embodiment import load_embodiment
    from dial_ros.nodes.qos import QOS_COMMAND, QOS_LATCHED, QOS_SENSOR
    from dial_ros.topics import (TOPIC_COMMAND, TOPIC_COMMAND_SOURCE, TOPIC_EXPERT_EPISODE,
                                 TOPIC_JOINT_STATES)
    config = yaml.safe_load((ROOT / 'config' / 'humanoid.yaml').read_text())
    config['expert']['ros__parameters'].update(episodes=EPISODES, takeover_delay_min_s=0.5,
                                               takeover_delay_max_s=1.5)
    config['recorder']['ros__parameters']['reset_s'] = 0.0
    max_step = config['controller']['ros__parameters']['max_step_rad']
    (tmp_path / 'dagger.yaml').write_text(yaml.safe_dump(config))
    bags = tmp_path / 'bags'
    domain = domain_id('dagger')
    launch = start([PYTHON, '-m', 'dial_ros.launch_runner', 'dial_ros', 'humanoid.launch.py',
                    'driver:=dagger', 'record:=true', f'record_dir:={bags}',
                    f'config:={tmp_path / "dagger.yaml"}', 'duration:=400'], domain,
                   tmp_path / 'launch.log')
    probe = Probe(domain)
    try:
        # a deep reader queue: a message dropped in this busy process would look like a jump
        deep = QoSProfile(depth=5000, reliability=QOS_COMMAND.reliability,
                          history=QOS_COMMAND.history)
        probe.record(TOPIC_COMMAND, Float64MultiArray, deep, lambda m: np.array(m.data))
        probe.record(TOPIC_COMMAND_SOURCE, String, QOS_LATCHED, lambda m: m.data)
        probe.record(TOPIC_EXPERT_EPISODE, String, 10, lambda m: m.data)
        probe.record(TOPIC_JOINT_STATES, JointState, QOS_SENSOR,
                     lambda m: dict(zip(m.name, m.position)))
        deadline = time.monotonic() + 360
        done = 'expert: 2 episodes done'
        while done not in (tmp_path / 'launch.log').read_text():
            assert time.monotonic() < deadline and launch.poll() is None, \
                (tmp_path / 'launch.log').read_text()[-4000:]
            time.sleep(1.0)
        publishers = probe.node.get_publishers_info_by_topic(TOPIC_COMMAND)
        assert [p.node_name for p in publishers] == ['controller']
    finally:
        stop(launch)
        probe.close()
    sources = [m for _, m in probe.since(TOPIC_COMMAND_SOURCE, 0)]
    assert sources.count('teleop') == EPISODES and sources[-1] == 'policy', sources
    # the sim's reset moves the robot between episodes: steps count within an episode
    starts = [t for t, m in probe.since(TOPIC_EXPERT_EPISODE, 0) if '"start"' in m]
    assert len(starts) == EPISODES, probe.since(TOPIC_EXPERT_EPISODE, 0)
    commands = probe.since(TOPIC_COMMAND, 0)
    for begin, end in zip([0.0] + starts, starts + [np.inf]):
        cmds = [m for t, m in commands if begin <= t < end]
        steps = [np.abs(b - a).max() for a, b in zip(cmds, cmds[1:])]
        assert max(steps, default=0.0) <= max_step + 1e-9, (begin, len(steps), max(steps))
    # after each reset the first command is a step from the measured (reset) pose
    names = load_embodiment(config['controller']['ros__parameters']['embodiment']).joint_names
    for start_time in starts:
        t_cmd, first = probe.since(TOPIC_COMMAND, start_time)[0]
        measured = [m for t, m in probe.since(TOPIC_JOINT_STATES, 0) if t <= t_cmd]
        pose = np.array([measured[-1][n] for n in names])
        gap = np.abs(first - pose).max()
        assert gap <= max_step + 0.01, (start_time, gap, names[np.abs(first - pose).argmax()])

    tags = [info(path)['tags'] for path in sorted(bags.iterdir())]
    assert len(tags) == EPISODES, tags
    assert all(t['source'] == 'intervention' and t['interventions'] == '1' for t in tags), tags
    summary = convert([str(bags)], tmp_path / 'ds', skip_sources=('policy',),
                      intervention_weight=2.0, skip_outcomes=('discard',))
    assert len(summary.converted) == EPISODES, summary.lines()
    ds = DialDataset(tmp_path / 'ds')
    assert sorted(ds.episode_weight.values()) == [2.0] * EPISODES
    assert ds.has_action.mean() > 0.9
