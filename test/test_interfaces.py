"""The rosidl interfaces in msg/: generated types, numpy round trips, pub/sub across processes.

The types are built into the venv by scripts/build_interfaces.sh (called by scripts/setup.sh).
"""
import array
import json
import os
from pathlib import Path
import random
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV_PYTHON = ROOT / '.venv' / 'bin' / 'python'
PYTHON = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable

try:
    from dial_ros.msg import ActionChunk, EpisodeEvent, LatentTensor
except ImportError as exc:  # pragma: no cover - reported by the tests below
    ActionChunk = EpisodeEvent = LatentTensor = None
    IMPORT_ERROR = exc
else:
    IMPORT_ERROR = None


def _require_types():
    if IMPORT_ERROR is not None:
        pytest.fail('dial_ros.msg does not import (run scripts/build_interfaces.sh): '
                    f'{IMPORT_ERROR}')


def _latent(x):
    """Build a LatentTensor holding the float32 array x, filled the fast way."""
    msg = LatentTensor()
    msg.header.stamp.sec = 12
    msg.header.stamp.nanosec = 345
    msg.header.frame_id = 'head_camera'
    msg.shape = list(x.shape)
    msg.dtype = LatentTensor.DTYPE_FLOAT32
    msg.data = array.array('B', np.ascontiguousarray(x).tobytes())
    msg.model_id = 'dial-tiny@test'
    msg.instruction_id = 'a1b2c3'
    msg.horizon = 8
    msg.valid_for = 0.5
    msg.valid = True
    msg.seq = 7
    msg.compute_time = 0.012
    return msg


def _test_array():
    """Return a 64x2048 float32 array with special values (NaN payload, +-0, inf, subnormal)."""
    x = np.random.default_rng(1234).standard_normal((64, 2048)).astype(np.float32)
    bits = x.view(np.uint32)
    bits[0, :6] = [0x7FC00001, 0x80000000, 0x00000000, 0x7F800000, 0xFF800000, 0x00000001]
    return x


def test_generated_types_have_the_fields():
    _require_types()
    assert LatentTensor.get_fields_and_field_types() == {
        'header': 'std_msgs/Header', 'shape': 'sequence<uint32>', 'dtype': 'string',
        'data': 'sequence<uint8>', 'model_id': 'string', 'instruction_id': 'string',
        'horizon': 'uint32', 'valid_for': 'double', 'valid': 'boolean', 'seq': 'uint64',
        'compute_time': 'double'}
    assert (LatentTensor.DTYPE_FLOAT32, LatentTensor.DTYPE_FLOAT16,
            LatentTensor.DTYPE_BFLOAT16) == ('float32', 'float16', 'bfloat16')
    assert ActionChunk.get_fields_and_field_types() == {
        'header': 'std_msgs/Header', 'joint_names': 'sequence<string>', 'horizon': 'uint32',
        'dt': 'double', 'positions': 'sequence<double>',
        'observation_stamp': 'builtin_interfaces/Time',
        'latent_stamp': 'builtin_interfaces/Time', 'model_id': 'string'}
    assert EpisodeEvent.get_fields_and_field_types() == {
        'header': 'std_msgs/Header', 'event': 'string', 'outcome': 'string', 'task': 'string',
        'source': 'string', 'operator_name': 'string'}
    assert [EpisodeEvent.EVENT_START, EpisodeEvent.EVENT_STOP, EpisodeEvent.EVENT_DISCARD,
            EpisodeEvent.EVENT_RESET] == ['start', 'stop', 'discard', 'reset']
    assert (EpisodeEvent.OUTCOME_SUCCESS, EpisodeEvent.OUTCOME_FAILURE,
            EpisodeEvent.OUTCOME_UNKNOWN) == ('success', 'failure', 'unknown')


def test_messages_merge_into_the_source_package():
    _require_types()
    import dial_ros
    import dial_ros.msg
    assert dial_ros.__version__
    assert Path(dial_ros.__file__).resolve().parent == ROOT / 'dial_ros'
    # The generated portion carries no __init__.py of its own (it would shadow the source).
    generated = Path(dial_ros.msg.__file__).resolve().parents[1]
    assert not (generated / '__init__.py').exists() or generated == ROOT / 'dial_ros'


def test_imports_from_anywhere_without_environment(tmp_path):
    code = ('from dial_ros.msg import LatentTensor, ActionChunk; import dial_ros; '
            'print(dial_ros.__version__)')
    env = {'HOME': os.environ.get('HOME', '/tmp')}
    out = subprocess.run([PYTHON, '-c', code], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == '0.1.0'


def test_latent_round_trip_is_bit_exact_and_zero_copy():
    _require_types()
    from rclpy.serialization import deserialize_message, serialize_message
    x = _test_array()
    msg = _latent(x)
    assert len(msg.data) == x.nbytes
    back = deserialize_message(serialize_message(msg), LatentTensor)
    y = np.frombuffer(back.data, dtype=back.dtype).reshape(back.shape)
    assert y.dtype == np.float32 and y.shape == (64, 2048)
    assert np.array_equal(y.view(np.uint32), x.view(np.uint32))
    # Reading is a view on the message's buffer, not a copy.
    back.data[0] ^= 0xFF
    assert y.view(np.uint32)[0, 0] != x.view(np.uint32)[0, 0]
    assert (back.header.stamp.sec, back.header.stamp.nanosec) == (12, 345)
    assert (back.model_id, back.instruction_id, back.horizon, back.seq) == (
        'dial-tiny@test', 'a1b2c3', 8, 7)
    assert back.valid and back.valid_for == 0.5 and back.compute_time == 0.012


def test_latent_carries_half_precision_bit_exact():
    _require_types()
    from rclpy.serialization import deserialize_message, serialize_message
    x = np.random.default_rng(5).standard_normal((16, 32)).astype(np.float16)
    msg = LatentTensor(shape=list(x.shape), dtype=LatentTensor.DTYPE_FLOAT16,
                       data=array.array('B', x.tobytes()))
    back = deserialize_message(serialize_message(msg), LatentTensor)
    y = np.frombuffer(back.data, dtype=back.dtype).reshape(back.shape)
    assert np.array_equal(y.view(np.uint16), x.view(np.uint16))


def test_action_chunk_round_trip():
    _require_types()
    from rclpy.serialization import deserialize_message, serialize_message
    joints = [f'joint_{i}' for i in range(7)]
    positions = np.linspace(-1.0, 1.0, 16 * len(joints)).reshape(16, len(joints))
    msg = ActionChunk(joint_names=joints, horizon=16, dt=0.02, model_id='dial-tiny@test',
                      positions=array.array('d', positions.tobytes()))
    msg.observation_stamp.sec = 3
    back = deserialize_message(serialize_message(msg), ActionChunk)
    got = np.frombuffer(back.positions, dtype=np.float64).reshape(back.horizon, -1)
    assert np.array_equal(got, positions)
    assert list(back.joint_names) == joints and back.observation_stamp.sec == 3


SUBSCRIBER = textwrap.dedent('''
    import hashlib, json, sys
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from dial_ros.msg import LatentTensor
    rclpy.init()
    node = rclpy.create_node('latent_sink')
    got = []
    node.create_subscription(LatentTensor, 'test_latent', got.append,
                             QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    print('ready', flush=True)
    while not got:
        rclpy.spin_once(node, timeout_sec=0.1)
    msg = got[0]
    with open(sys.argv[1], 'wb') as f:
        f.write(bytes(msg.data))
    print(json.dumps({
        'shape': list(msg.shape), 'dtype': msg.dtype, 'model_id': msg.model_id,
        'instruction_id': msg.instruction_id, 'horizon': msg.horizon, 'seq': msg.seq,
        'valid': msg.valid, 'valid_for': msg.valid_for, 'frame_id': msg.header.frame_id,
        'stamp': [msg.header.stamp.sec, msg.header.stamp.nanosec]}), flush=True)
    node.destroy_node()
    rclpy.shutdown()
''')

PUBLISHER = textwrap.dedent('''
    import sys, time
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from dial_ros.msg import LatentTensor
    sys.path.insert(0, sys.argv[1])
    from test_interfaces import _latent, _test_array
    rclpy.init()
    node = rclpy.create_node('latent_source')
    pub = node.create_publisher(LatentTensor, 'test_latent',
                                QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    msg = _latent(_test_array())
    deadline = time.monotonic() + 30.0
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    print('matched', pub.get_subscription_count(), flush=True)
    # Publish until the test stops this process: the subscriber may match this writer a
    # little after the writer matched it.
    while time.monotonic() < deadline:
        pub.publish(msg)
        time.sleep(0.2)
''')


@pytest.mark.ros
def test_latent_pub_sub_across_processes(tmp_path):
    _require_types()
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST',
               ROS_DOMAIN_ID=str(random.randint(100, 200)))
    env.pop('ROS_LOCALHOST_ONLY', None)
    out_file = tmp_path / 'data.bin'
    sub = subprocess.Popen([PYTHON, '-c', SUBSCRIBER, str(out_file)], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pub = subprocess.Popen([PYTHON, '-c', PUBLISHER, str(Path(__file__).parent)], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    start = time.monotonic()
    try:
        sub_out, sub_err = sub.communicate(timeout=45)
    except subprocess.TimeoutExpired:
        sub.kill()
        sub_out, sub_err = sub.communicate()
    finally:
        pub.terminate()
        try:
            pub_out, pub_err = pub.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            pub.kill()
            pub_out, pub_err = pub.communicate()
    elapsed = time.monotonic() - start
    assert sub.returncode == 0, (
        f'subscriber failed after {elapsed:.1f} s:\n{sub_out}\n{sub_err}\n'
        f'publisher:\n{pub_out}\n{pub_err}')
    meta = json.loads(sub_out.strip().splitlines()[-1])
    assert meta == {
        'shape': [64, 2048], 'dtype': 'float32', 'model_id': 'dial-tiny@test',
        'instruction_id': 'a1b2c3', 'horizon': 8, 'seq': 7, 'valid': True, 'valid_for': 0.5,
        'frame_id': 'head_camera', 'stamp': [12, 345]}
    received = np.frombuffer(out_file.read_bytes(), dtype=np.float32).reshape(64, 2048)
    assert np.array_equal(received.view(np.uint32), _test_array().view(np.uint32))
