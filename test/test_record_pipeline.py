"""Record -> read back -> dataset, from the live sim driven by the scripted expert.

The humanoid launch with ``driver:=expert record:=true``: the expert drives the sim through
the command topic (with DART noise: the executed command is the clean target plus noise,
the target goes out on /expert/action_label), the recorder follows its episode events.
The episode bag is read back by two independent readers (the ``mcap`` library with its
ROS 2 decoder, and ``rosbags``), counts are compared with metadata.yaml and with the sim's
publishing rate, and the episode converts to a LeRobot v3.0 dataset whose batch trains a
tiny DIAL model for one step.
"""
import collections
import time

import pytest
import yaml

from rosgraph import PYTHON, domain_id, start, stop

pytestmark = [pytest.mark.ros, pytest.mark.slow]
DART_STD = 0.03


def finished_episodes(folder):
    done = []
    for meta in sorted(folder.glob('*/metadata.yaml')):
        info = yaml.safe_load(meta.read_text())['rosbag2_bagfile_information']
        tags = info.get('custom_data') or {}
        if tags.get('outcome') in ('success', 'fail'):
            done.append((meta.parent, info, tags))
    return done


@pytest.fixture(scope='module')
def episode(tmp_path_factory):
    from dial_ros.launch_runner.child import write_params
    root = tmp_path_factory.mktemp('record')
    domain = domain_id('record')
    params = write_params(root / 'params.yaml', {'expert': {'noise_std': DART_STD}})
    launch = start([PYTHON, '-m', 'dial_ros.launch_runner', 'dial_ros', 'humanoid.launch.py',
                    'driver:=expert', 'record:=true', f'record_dir:={root / "demos"}',
                    f'config:={params}', 'duration:=240'], domain, root / 'launch.log')
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and not finished_episodes(root / 'demos'):
            time.sleep(1.0)
    finally:
        stop(launch)
    done = finished_episodes(root / 'demos')
    assert done, (root / 'launch.log').read_text()[-4000:]
    return done[0] + (root,)


def test_independent_readers_agree_with_metadata(episode):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory
    path, info, tags, _ = episode
    listed = {t['topic_metadata']['name']: t['message_count']
              for t in info['topics_with_message_count']}
    counts = collections.Counter()
    for mcap_file in sorted(path.glob('*.mcap')):
        with open(mcap_file, 'rb') as f:
            for _, channel, _, decoded in make_reader(
                    f, decoder_factories=[DecoderFactory()]).iter_decoded_messages():
                counts[channel.topic] += 1
                if channel.topic == '/joint_states':
                    assert len(decoded.position) == len(decoded.name) > 0
    assert dict(counts) == listed
    from rosbags.rosbag2 import Reader
    with Reader(path) as reader:
        by_rosbags = collections.Counter(c.topic for c, _, _ in reader.messages())
    assert by_rosbags == counts
    assert tags['source'] == 'teleop' or tags['source']
    for topic in ('/joint_states', '/camera/head/image_raw', '/dial/joint_commands'):
        assert counts[topic] > 0, topic


def test_recorded_rates_match_what_the_sim_published(episode):
    path, info, _, _ = episode
    seconds = info['duration']['nanoseconds'] * 1e-9
    listed = {t['topic_metadata']['name']: t['message_count']
              for t in info['topics_with_message_count']}
    # the sim publishes joint states and frames at 20 Hz; the expert commands at 20 Hz
    assert seconds > 2.0
    assert listed['/joint_states'] >= 0.8 * 20 * seconds, (listed, seconds)
    assert listed['/dial/joint_commands'] >= 0.8 * 20 * seconds * 0.5, (listed, seconds)


def test_episode_converts_to_a_dataset_that_trains(episode):
    import torch

    from dial_ros.data.convert import convert
    from dial_ros.data.dataset import DialDataset, collate
    from dial_ros.model.build import build_model
    path, _, _, root = episode
    summary = convert([str(path)], root / 'dataset', embodiment='gr1_sim',
                      skip_outcomes=('discard',))
    assert summary.converted, summary.lines()
    dataset = DialDataset(root / 'dataset')
    assert len(dataset) > 20
    batch = collate([dataset[i] for i in (0, len(dataset) // 2, len(dataset) - 1)])
    torch.manual_seed(0)
    model = build_model('tiny', embodiments=['gr1_sim'])
    loss, metrics = model.compute_loss(batch)
    assert torch.isfinite(loss) and metrics['loss_fm'] > 0


def test_dart_recording_keeps_the_clean_label_as_the_action(episode):
    """The robot executed label + noise on the waist and right arm; the dataset's action is
    the expert's clean label, not the noisy command."""
    import numpy as np

    from dial_ros.data.align import align_episode, nearest
    from dial_ros.data.bag import read_episode
    from dial_ros.data.dataset import DialDataset
    from dial_ros.embodiment import load_embodiment
    from dial_ros.sim.expert import IK_JOINTS
    path, _, _, root = episode
    raw = read_episode(path)
    assert len(raw.labels) == len(raw.commands) > 20
    labels, commands = np.array(raw.labels), np.array(raw.commands)
    arm = [i for i, n in enumerate(load_embodiment('gr1_sim').joint_names) if n in IK_JOINTS]
    other = sorted(set(range(labels.shape[1])) - set(arm))
    noise = commands[:, arm] - labels[:, arm]
    assert 0.3 * DART_STD < noise.std() < 3 * DART_STD
    assert np.array_equal(commands[:, other], labels[:, other])
    # each frame's action is the label stamped with its image (the step it answers)
    frames = align_episode(raw, load_embodiment('gr1_sim'))
    _, gap = nearest(raw.label_stamps, raw.image_stamps[frames.image_index])
    assert frames.has_action.mean() > 0.9 and np.all(gap[frames.has_action] < 1e-6)
    dataset = root / 'dataset'
    if not dataset.is_dir():
        pytest.skip('the conversion test did not run')
    converted = DialDataset(dataset)
    # frames before the first label carry no action (has_action false, zero-filled)
    actions = converted.action[converted.has_action].astype(np.float64)
    assert len(actions) > 20
    # every action row is a recorded label (float32 storage), none a noisy command
    to_label = np.abs(actions[:, None] - labels[None]).max(axis=2).min(axis=1)
    to_command = np.abs(actions[:, None] - commands[None]).max(axis=2).min(axis=1)
    assert np.all(to_label < 1e-6) and np.median(to_command) > 1e-3


def test_training_command_on_the_recorded_dataset(episode):
    """The documented training command, a few steps on the episode recorded above."""
    import csv

    import numpy as np

    from dial_ros.model.policy import DialPolicy
    from dial_ros.train.__main__ import main
    _, _, _, root = episode
    dataset = root / 'dataset'
    if not dataset.is_dir():
        pytest.skip('the conversion test did not run')
    run = root / 'run'
    assert main(['--dataset', str(dataset), '--out', str(run), '--steps', '4',
                 '--batch-size', '4', '--save-every', '2']) == 0
    rows = list(csv.DictReader(open(run / 'metrics.csv')))
    assert [r['stage'] for r in rows] == ['warmup'] * 2 + ['end_to_end'] * 2
    assert list((dataset / 'cache').glob('vit_*/episode_*.npy')), 'no ViT token cache'
    policy = DialPolicy.from_checkpoint(run / 'checkpoints' / 'latest')
    tokens = policy.encode_frame(np.zeros((224, 224, 3), np.uint8))
    intent = policy.foresee(tokens, 'pick up the cube')
    chunk = policy.act(tokens, intent, np.zeros(32))
    assert chunk.shape == (16, 32) and np.all(np.isfinite(chunk))


def test_replay_streams_the_recorded_commands_through_safety_to_the_sim(episode):
    """The "replay policy": recorded commands -> SafetyFilter -> the sim, no model."""
    import numpy as np
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    from dial_ros.data.bag import read_episode
    from dial_ros.embodiment import load_embodiment
    from dial_ros.nodes.qos import QOS_COMMAND, QOS_SENSOR
    from dial_ros.topics import TOPIC_COMMAND, TOPIC_JOINT_STATES
    from rosgraph import Probe
    path, _, _, root = episode
    recorded = np.array(read_episode(path).commands)
    spec = load_embodiment('gr1_sim')
    domain = domain_id('replay')
    sim = start([PYTHON, '-m', 'dial_ros.nodes.sim', '--ros-args', '-p',
                 'publish_camera:=false'], domain, root / 'replay_sim.log')
    replay = start([PYTHON, '-m', 'dial_ros.nodes.replay', '--ros-args', '-p', f'bag:={path}',
                    '-p', 'ramp_time_s:=0.5'], domain, root / 'replay.log')
    probe = Probe(domain)
    try:
        probe.record(TOPIC_COMMAND, Float64MultiArray, QOS_COMMAND,
                     lambda m: np.array(m.data))
        probe.record(TOPIC_JOINT_STATES, JointState, QOS_SENSOR,
                     lambda m: None)
        assert probe.wait_for(TOPIC_COMMAND, 200, timeout=60), (
            (root / 'replay.log').read_text()[-3000:])
        sent = np.array([m for _, m in probe.since(TOPIC_COMMAND, 0)])
    finally:
        probe.close()
        stop(replay)
        stop(sim)
    assert sent.shape[1] == spec.num_joints
    assert np.all(sent >= spec.position_lower - 1e-9) and np.all(sent <= spec.position_upper)
    assert np.abs(np.diff(sent, axis=0)).max() <= 0.02 + 1e-9  # max_step_rad
    # the stream follows the recording: every sent pose is near some recorded command
    distance = np.abs(sent[-50:, None, :] - recorded[None]).max(axis=2).min(axis=1)
    assert np.median(distance) < 0.05, distance
