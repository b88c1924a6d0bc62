"""Synthetic episode bags (rosbag2 MCAP written with rosbags) and tests of reading them.

``write_episode`` is imported by test_dataset.py. Frame k of an episode shows its counter as
the value (10 k) mod 250 in a 32 x 32 patch at (16, 16), so decoded video can be checked.
"""
import pathlib

import numpy as np
import pytest

from dial_ros.bags.types import default_types
from dial_ros.data import bag as bagmod
from dial_ros.embodiment import load_embodiment

T0 = 1_700_000_000.0
PATCH = (slice(16, 48), slice(16, 48))


def counter_value(k):
    return (10 * k) % 250


def joint_value(j, t, idle_until=0.0):
    """Position of joint j at time t (s after T0): a slow ramp, still before idle_until."""
    return 0.05 * j / 32 + 0.3 * max(t - idle_until, 0.0)


def _types():
    ts = default_types().store
    return ts, {k.split('/')[-1]: ts.types[k] for k in (
        'builtin_interfaces/msg/Time', 'std_msgs/msg/Header', 'sensor_msgs/msg/Image',
        'sensor_msgs/msg/JointState', 'std_msgs/msg/Float64MultiArray',
        'std_msgs/msg/MultiArrayLayout', 'std_msgs/msg/String', 'geometry_msgs/msg/PoseArray',
        'geometry_msgs/msg/Pose', 'geometry_msgs/msg/Point', 'geometry_msgs/msg/Quaternion')}


def _header(m, t):
    sec = int(t)
    return m['Header'](stamp=m['Time'](sec=sec, nanosec=int(round((t - sec) * 1e9))),
                       frame_id='')


def _image(m, t, k, size):
    img = np.zeros((size, size, 3), np.uint8)
    img[..., 0] = np.linspace(0, 200, size, dtype=np.uint8)[None, :]
    img[PATCH] = counter_value(k)
    return m['Image'](header=_header(m, t), height=size, width=size, encoding='rgb8',
                      is_bigendian=0, step=size * 3, data=img.reshape(-1))


def write_episode(path, tags, frames=30, fps=20.0, images=True, joints=True, commands=True,
                  wrists=False, rename_joints=False, idle_frames=0, size=224,
                  instruction='pick up the cube', embodiment='gr1_sim'):
    """Write one episode bag directory; returns its path."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    ts, m = _types()
    spec = load_embodiment(embodiment)
    names = list(spec.joint_names) + ['extra_passive_joint']
    rng = np.random.default_rng(len(str(path)))
    idle = idle_frames / fps
    msgs = []  # (bag time s, topic, msgtype, msg)
    for k in range(frames if images else 0):
        t = T0 + k / fps + 0.002
        msgs.append((t + 0.001, '/camera/head/image_raw', 'sensor_msgs/msg/Image',
                     _image(m, t, k, size)))
    for i in range(int(frames / fps * 50) if joints else 0):
        t = T0 + i / 50
        order = rng.permutation(len(names))
        shown = ['robot1/' + names[o] if rename_joints else names[o] for o in order]
        pos = np.array([joint_value(o, t - T0, idle) for o in order])
        msgs.append((t + 0.001, '/joint_states', 'sensor_msgs/msg/JointState',
                     m['JointState'](header=_header(m, t), name=shown, position=pos,
                                     velocity=np.zeros(0), effort=np.zeros(0))))
    for k in range(frames if commands else 0):
        t = T0 + k / fps + 0.008   # issued right after frame k
        data = np.array([joint_value(j, t - T0 + 0.05, idle) for j in range(spec.num_joints)])
        msgs.append((t, '/dial/joint_commands', 'std_msgs/msg/Float64MultiArray',
                     m['Float64MultiArray'](layout=m['MultiArrayLayout'](dim=[], data_offset=0),
                                            data=data)))
    for k in range(frames if wrists else 0):
        t = T0 + k / fps + 0.002
        poses = [m['Pose'](position=m['Point'](x=0.3 + 0.01 * k * (1 - 2 * side), y=0.0,
                                               z=1.0), orientation=m['Quaternion'](
                               x=0.0, y=0.0, z=0.0, w=1.0)) for side in (0, 1)]
        msgs.append((t, '/human/wrist_poses', 'geometry_msgs/msg/PoseArray',
                     m['PoseArray'](header=_header(m, t), poses=poses)))
    msgs.append((T0 - 0.5, '/dial/instruction', 'std_msgs/msg/String',
                 m['String'](data=instruction)))
    path = pathlib.Path(path)
    writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
    for key, value in tags.items():
        writer.set_custom_data(key, value)
    with writer:
        conns = {}
        for t, topic, msgtype, msg in sorted(msgs, key=lambda x: x[0]):
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=ts)
            writer.write(conns[topic], int(t * 1e9), ts.serialize_cdr(msg, msgtype))
    return path


def robot_tags(outcome='success', source='teleop'):
    return {'task': 'pick_cube', 'instruction': 'pick up the cube', 'source': source,
            'operator': 'ada', 'outcome': outcome, 'robot': 'gr1_sim', 'embodiment': 'gr1_sim'}


def test_read_episode_maps_streams(tmp_path):
    path = write_episode(tmp_path / 'ep', robot_tags(), frames=10)
    raw = bagmod.read_episode(path)
    assert raw.tags['operator'] == 'ada' and len(raw.images) == 10
    assert raw.images[3][20, 20, 0] == counter_value(3)
    assert 'extra_passive_joint' in raw.joints and len(raw.commands) == 10
    assert raw.instructions[0][1] == 'pick up the cube'


def test_rot6d_identity_and_rotation():
    assert np.allclose(bagmod.quat_to_rot6d([0, 0, 0, 1]), [1, 0, 0, 0, 1, 0])
    s = np.sqrt(0.5)  # 90 degrees about z: x -> y, y -> -x
    assert np.allclose(bagmod.quat_to_rot6d([0, 0, s, s]), [0, 1, 0, -1, 0, 0])


def test_unreadable_bag_names_the_episode(tmp_path):
    path = tmp_path / 'ep_garbage'
    path.mkdir()
    (path / 'ep_garbage_0.mcap').write_bytes(b'not an mcap file at all')
    with pytest.raises(bagmod.EpisodeError, match='ep_garbage'):
        bagmod.read_episode(path)


def test_bag_with_an_episode_event_topic_reads(tmp_path):
    """rosbags' AnyReader rejects EpisodeEvent's empty string constant; we do not."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    ts, m = _types()
    kind = 'dial_ros/msg/EpisodeEvent'
    msgdef, _ = ts.generate_msgdef(kind)
    msgdef = msgdef.replace('string OUTCOME_SUCCESS=success',
                            'string OUTCOME_SUCCESS=success\nstring OUTCOME_UNKNOWN=')
    with Writer(tmp_path / 'ep_ev', version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        event = writer.add_connection('/dial/episode_event', kind, msgdef=msgdef,
                                      rihs01=ts.hash_rihs01(kind))
        image = writer.add_connection('/camera/head/image_raw', 'sensor_msgs/msg/Image',
                                      typestore=ts)
        writer.write(event, int(T0 * 1e9), b'\x00' * 8)
        writer.write(image, int(T0 * 1e9), ts.serialize_cdr(_image(m, T0, 1, 8),
                                                            'sensor_msgs/msg/Image'))
    raw = bagmod.read_episode(tmp_path / 'ep_ev')
    assert len(raw.images) == 1 and raw.images[0].shape == (8, 8, 3)
