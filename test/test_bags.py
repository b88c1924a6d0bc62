"""The bag writer, recovery and episode logic without ROS: read back by independent readers."""
import errno
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import yaml
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from rosbags.highlevel import AnyReader

from dial_ros.bags import BagWriter, RecordingError, recover
from dial_ros.bags.__main__ import main as cli
from dial_ros.bags.episodes import EpisodeRecorder
from dial_ros.bags.metadata import qos_dict
from dial_ros.bags.types import default_types
from dial_ros.bags.writer import SegmentFile

ROOT = pathlib.Path(__file__).resolve().parent.parent
TAGS = {'task': 'lift', 'instruction': 'pick up the cube', 'source': 'teleop',
        'operator': 'ada', 'robot': 'gr1_sim', 'embodiment': 'gr1_tabletop'}
T0 = 1_700_000_000 * 10**9


@pytest.fixture(scope='module')
def store():
    """rosbags' Kilted typestore with the project's messages (an independent serialiser)."""
    types = default_types()
    types.definition('dial_ros/msg/LatentTensor')
    return types._store


def image(store, i, size=64):
    t = store.types
    header = t['std_msgs/msg/Header'](t['builtin_interfaces/msg/Time'](i, 7), 'head')
    msg = t['sensor_msgs/msg/Image'](header, size, size, 'rgb8', 0, size * 3,
                                     np.full(size * size * 3, i % 256, np.uint8))
    return store.serialize_cdr(msg, 'sensor_msgs/msg/Image')


def latent(store, i):
    t = store.types
    header = t['std_msgs/msg/Header'](t['builtin_interfaces/msg/Time'](i, 0), '')
    data = np.arange(16, dtype=np.float32).tobytes()
    msg = t['dial_ros/msg/LatentTensor'](header, np.array([4, 4], np.uint32), 'float32',
                                         np.frombuffer(data, np.uint8), 'dial-tiny', 'abc',
                                         2, 0.5, True, i, 0.01)
    return store.serialize_cdr(msg, 'dial_ros/msg/LatentTensor')


def write_episode(store, path, n=60, **options):
    writer = BagWriter(path, tags=TAGS, chunk_kb=16, **options)
    writer.add_topic('/camera/head/image_raw', 'sensor_msgs/msg/Image',
                     [qos_dict('best_effort', depth=5)])
    writer.add_topic('/dial/latent_intent', 'dial_ros/msg/LatentTensor', [qos_dict()])
    for i in range(n):
        writer.write('/camera/head/image_raw', image(store, i), T0 + i * 50_000_000)
        writer.write('/dial/latent_intent', latent(store, i), T0 + i * 50_000_000 + 1000)
    return writer


def read_rosbags(path):
    with AnyReader([pathlib.Path(path)]) as reader:
        return {c.topic: c.msgcount for c in reader.connections}, reader.message_count


def test_rotated_episode_reads_back_with_mcap_and_rosbags(store, tmp_path):
    bag = tmp_path / 'ep'
    summary = write_episode(store, bag, max_segment_mb=0.1).close(outcome='success')
    assert summary['messages'] == 120 and len(summary['segments']) >= 3
    files = sorted(bag.glob('*.mcap'))
    assert [f.name for f in files] == [f'ep_{i}.mcap' for i in range(len(files))]

    seen = {}
    for path in summary['segments']:      # independent reader + decoder, segment by segment
        with open(bag / path, 'rb') as f:
            reader = make_reader(f, decoder_factories=[DecoderFactory()])
            assert reader.get_header().profile == 'ros2'
            for schema, channel, message, msg in reader.iter_decoded_messages():
                seen.setdefault(channel.topic, []).append(msg)
                assert channel.message_encoding == 'cdr' and schema.encoding == 'ros2msg'
    images, latents = seen['/camera/head/image_raw'], seen['/dial/latent_intent']
    assert len(images) == len(latents) == 60
    assert images[7].height == 64 and images[7].encoding == 'rgb8'
    assert images[7].header.stamp.sec == 7 and bytes(images[7].data) == bytes([7]) * 64 * 192
    arr = np.frombuffer(bytes(latents[5].data), np.float32).reshape(latents[5].shape)
    assert arr[3, 3] == 15 and latents[5].model_id == 'dial-tiny' and latents[5].seq == 5

    counts, total = read_rosbags(bag)
    assert counts == {'/camera/head/image_raw': 60, '/dial/latent_intent': 60}
    assert total == 120

    info = yaml.safe_load((bag / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert info['version'] == 9 and info['storage_identifier'] == 'mcap'
    assert info['relative_file_paths'] == summary['segments']
    assert sum(f['message_count'] for f in info['files']) == info['message_count'] == 120
    assert info['custom_data'] == {**TAGS, 'outcome': 'success', 'state': 'closed'}
    qos = {t['topic_metadata']['name']: t['topic_metadata']['offered_qos_profiles'][0]
           for t in info['topics_with_message_count']}
    assert qos['/camera/head/image_raw']['reliability'] == 'best_effort'
    assert info['duration']['nanoseconds'] == 59 * 50_000_000 + 1000


def test_time_rotation_and_cli_info(store, tmp_path, capsys):
    bag = tmp_path / 'timed'
    summary = write_episode(store, bag, n=40, max_segment_s=0.5).close()
    assert len(summary['segments']) == 4          # 2 s of log time, 0.5 s segments
    assert cli(['info', str(bag)]) == 0
    out = capsys.readouterr().out
    assert '/dial/latent_intent' in out and "task='lift'" in out and 'Messages:   80' in out


def test_unknown_type_and_bad_tags_are_named(tmp_path):
    writer = BagWriter(tmp_path / 'b', tags={'source': 'human'})
    with pytest.raises(ValueError, match='nope_msgs/msg/Thing'):
        writer.add_topic('/x', 'nope_msgs/msg/Thing')
    writer.close()
    with pytest.raises(ValueError, match='source'):
        BagWriter(tmp_path / 'c', tags={'source': 'robot?'})
    with pytest.raises(ValueError, match='not empty'):
        BagWriter(tmp_path / 'b')


CRASH_SCRIPT = """
import sys, time
sys.path.insert(0, {root!r})
from dial_ros.bags import BagWriter
w = BagWriter({path!r}, tags={{'task': 'lift', 'source': 'teleop'}}, chunk_kb=8,
              max_segment_mb=0.05)
w.add_topic('/joint_states', 'sensor_msgs/msg/JointState')
data = bytes(4) + bytes(400)   # any payload: the writer never decodes
last = -1
for i in range(10**6):
    w.write('/joint_states', data, {t0} + i * 1_000_000)
    if w.flushed_count != last:
        last = w.flushed_count
        print(last, flush=True)
    time.sleep(0.0002)
"""


def test_kill_9_then_recover(tmp_path):
    bag = tmp_path / 'crash'
    script = CRASH_SCRIPT.format(root=str(ROOT), path=str(bag), t0=T0)
    proc = subprocess.Popen([sys.executable, '-c', script], stdout=subprocess.PIPE, text=True)
    flushed = 0
    deadline = time.monotonic() + 30
    while flushed < 400 and time.monotonic() < deadline:
        flushed = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert flushed >= 400
    assert (bag / 'metadata.yaml').exists()       # written at each rotation
    counts, _ = read_rosbags(bag)                  # the finished segments read as they are
    assert 0 < counts['/joint_states'] <= flushed

    summary = recover(bag)
    assert summary['messages'] >= flushed and summary['salvaged'] > 0
    counts, total = read_rosbags(bag)
    assert counts['/joint_states'] == total == summary['messages']
    info = yaml.safe_load((bag / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert info['custom_data']['task'] == 'lift'
    assert info['custom_data']['outcome'] == 'unknown'
    assert info['custom_data']['state'] == 'recovered'
    assert list(bag.glob('*.truncated'))


class FullDisk(SegmentFile):
    """A segment stream whose third segment hits ENOSPC after a few KB."""

    def write(self, data):
        if self.path.endswith('_2.mcap') and self.pos > 20_000:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


def test_disk_full_stops_with_a_clear_error_and_keeps_finished_segments(store, tmp_path):
    bag = tmp_path / 'full'
    writer = BagWriter(bag, tags=TAGS, chunk_kb=16, max_segment_mb=0.1, opener=FullDisk)
    writer.add_topic('/camera/head/image_raw', 'sensor_msgs/msg/Image')
    with pytest.raises(RecordingError, match=r'disk full writing .*full_2\.mcap') as err:
        for i in range(200):
            writer.write('/camera/head/image_raw', image(store, i), T0 + i)
    assert err.value.errno == errno.ENOSPC
    with pytest.raises(RecordingError, match='recording stopped'):
        writer.write('/camera/head/image_raw', image(store, 0), T0)
    summary = writer.close()
    assert 'disk full' in summary['error']
    counts, total = read_rosbags(bag)              # segments 0 and 1 are intact
    info = yaml.safe_load((bag / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert info['relative_file_paths'] == ['full_0.mcap', 'full_1.mcap']
    assert info['custom_data']['state'] == 'failed' and 'full_2' in info['custom_data']['error']
    assert total == info['message_count'] == counts['/camera/head/image_raw'] > 0
    assert recover(bag)['messages'] >= total       # later, recover salvages what it can


def test_episode_recorder_states_discard_and_human_only(tmp_path):
    now = [0.0]
    rec = EpisodeRecorder(tmp_path, reset_s=2.0, stop_grace_s=0.0, clock=lambda: now[0],
                          wall_ns=lambda: T0)
    assert rec.submit('/camera/head/image_raw', 'sensor_msgs/msg/Image', [], b'x', 1) is False
    first = rec.start({**TAGS, 'source': 'human'})
    assert first.name.startswith('episode_0000_') and rec.state == 'recording'
    with pytest.raises(ValueError, match='already recording'):
        rec.start(TAGS)
    for i in range(20):     # a human demonstration: the camera only, no robot topics
        assert rec.submit('/camera/head/image_raw', 'sensor_msgs/msg/Image',
                          [qos_dict('best_effort')], bytes(64), T0 + i)
    summary = rec.stop('success')
    assert summary['topics'] == {'/camera/head/image_raw': 20} and rec.state == 'reset'
    counts, _ = read_rosbags(first)
    assert counts == {'/camera/head/image_raw': 20}
    second = rec.start(TAGS)                       # a start ends the reset phase early
    assert second.name.startswith('episode_0001_')
    rec.discard()
    assert not second.exists() and rec.state == 'reset'
    now[0] = 2.5
    rec.tick()
    assert rec.state == 'idle'
    rec.discard_mode = 'tag'
    third = rec.start(TAGS)
    rec.submit('/x', 'std_msgs/msg/String', [], bytes(8), T0)
    rec.discard()
    assert yaml.safe_load((third / 'metadata.yaml').read_text())[
        'rosbag2_bagfile_information']['custom_data']['outcome'] == 'discard'
    with pytest.raises(ValueError, match='not recording'):
        rec.stop()
    rec.close()


def test_stop_keeps_messages_received_before_it_that_callbacks_deliver_late(tmp_path):
    walls = iter([T0, T0 + 100])                   # start, stop
    rec = EpisodeRecorder(tmp_path, stop_grace_s=5.0, wall_ns=lambda: next(walls))
    rec.start(TAGS)
    topic = ('/joint_states', 'sensor_msgs/msg/JointState', [])
    assert not rec.submit(*topic, bytes(8), T0 - 1)       # received before the start
    assert rec.submit(*topic, bytes(8), T0 + 10)
    stopper = threading.Thread(target=lambda: rec.stop('success'))
    stopper.start()
    time.sleep(0.2)
    assert stopper.is_alive()                             # waiting for late deliveries
    assert rec.submit(*topic, bytes(8), T0 + 50)          # received before the stop
    assert not rec.submit(*topic, bytes(8), T0 + 150)     # after: ends the wait
    stopper.join(2.0)
    assert not stopper.is_alive()
    assert rec.last_summary['topics'] == {'/joint_states': 2}
    rec.close()
