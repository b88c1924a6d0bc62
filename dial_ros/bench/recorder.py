"""Demo recorder benchmark: three 640x480 rgb8 cameras at 30 Hz + joint states at 500 Hz.

    python -m dial_ros.bench.recorder --json OUT.json [--duration 60] [--keep DIR]

Each stream is published by a process of its own (this module with ``--publish``); the
recorder node (dial_ros.nodes.recorder, default settings) records them all. Once every
publisher has matched the recorder, an episode starts (~/start), the publishers publish
for ``--duration`` s, and the episode stops (~/stop_success). Reported: messages published
(counted by the publishers) vs recorded (counted in the bag), lost, the recorder's CPU
share over the episode (utime + stime from /proc/<pid>/stat over wall time, in cores),
the bag's MB/s and the episode duration. The bag is deleted unless ``--keep`` is given.

Every process runs with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and a domain id of its own.
"""
import argparse
import json
import os
import pathlib
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import dial_ros
from dial_ros import procs

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
CAMERAS = [f'/bench/camera{i}/image_raw' for i in range(3)]
JOINTS = '/joint_states'
MATCH_TIMEOUT_S = 60.0


def python():
    venv = ROOT / '.venv' / 'bin' / 'python'
    return str(venv if venv.exists() else sys.executable)


def cpu_seconds(pid):
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = pathlib.Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


# --- publisher processes --------------------------------------------------------------------
def publish(topic, rate_hz, duration_s):
    """Publisher process: print 'ready' once matched, wait for 'go', publish, print the count."""
    import rclpy
    from sensor_msgs.msg import Image, JointState

    from dial_ros.nodes.qos import QOS_SENSOR
    rclpy.init()
    node = rclpy.create_node('bench_pub_' + topic.strip('/').replace('/', '_'))
    if topic == JOINTS:
        msg = JointState(name=[f'joint_{i}' for i in range(32)], position=[0.0] * 32,
                         velocity=[0.0] * 32, effort=[0.0] * 32)
        pub = node.create_publisher(JointState, topic, QOS_SENSOR)
    else:
        msg = Image(height=480, width=640, encoding='rgb8', step=1920,
                    data=bytes(640 * 480 * 3))
        pub = node.create_publisher(Image, topic, QOS_SENSOR)
    deadline = time.monotonic() + MATCH_TIMEOUT_S
    while pub.get_subscription_count() < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)               # the recorder's side of discovery
    print('ready', flush=True)
    sys.stdin.readline()          # 'go'
    count, start = 0, time.monotonic()
    period = 1.0 / rate_hz
    while True:
        due = start + count * period
        if due - start >= duration_s:
            break
        time.sleep(max(0.0, due - time.monotonic()))
        msg.header.stamp = node.get_clock().now().to_msg()
        if topic == JOINTS:
            msg.position[0] = float(count)      # a sequence number: where losses happen
        pub.publish(msg)
        count += 1
    print(json.dumps({'topic': topic, 'published': count}), flush=True)
    time.sleep(1.0)               # let the last messages drain before the participant goes
    node.destroy_node()
    rclpy.try_shutdown()


# --- the benchmark --------------------------------------------------------------------------
def _readline(proc, timeout):
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise TimeoutError('a publisher did not answer')
    return proc.stdout.readline().strip()


def _call(node, service):
    from std_srvs.srv import Trigger
    client = node.create_client(Trigger, f'/recorder/{service}')
    if not client.wait_for_service(timeout_sec=MATCH_TIMEOUT_S):
        raise TimeoutError(f'/recorder/{service} not available')
    future = client.call_async(Trigger.Request())
    while not future.done():
        time.sleep(0.01)
    result = future.result()
    if not result.success:
        raise RuntimeError(f'{service}: {result.message}')
    return json.loads(result.message)


def run(duration, out_dir):
    """Run the benchmark; returns the result dict."""
    import threading

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor

    from dial_ros.bags import info
    topics = CAMERAS + [JOINTS]
    domain = int(os.environ['ROS_DOMAIN_ID'])
    rates = [f'{c}=30.0' for c in CAMERAS] + [f'{JOINTS}=500.0']
    params = {'output_dir': out_dir, 'topics': '[' + ','.join(topics) + ']',
              'reset_s': 0.0, 'expected_rates': '[' + ','.join(rates) + ']'}
    cmd = [python(), '-m', 'dial_ros.nodes.recorder', '--ros-args']
    for key, value in params.items():
        cmd += ['-p', f'{key}:={value}']
    recorder = procs.start(cmd, domain, pathlib.Path(out_dir) / 'recorder.log', cwd=None)
    pubs = [procs.start([python(), '-m', 'dial_ros.bench.recorder', '--publish', topic,
                         '--rate', str(500.0 if topic == JOINTS else 30.0),
                         '--duration', str(duration)], domain, cwd=None,
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None, text=True)
            for topic in topics]
    rclpy.init()
    node = rclpy.create_node('bench_recorder_control')
    timeline = []      # the recorder's /diagnostics during the episode (1 Hz)
    node.create_subscription(DiagnosticArray, '/diagnostics',
                             lambda m: _diagnostics(m, timeline), 10)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()
    try:
        for proc in pubs:
            if _readline(proc, MATCH_TIMEOUT_S + 10) != 'ready':
                raise RuntimeError('publisher failed to start')
        started = _call(node, 'start')
        cpu0, wall0 = cpu_seconds(recorder.pid), time.monotonic()
        for proc in pubs:
            proc.stdin.write('go\n')
            proc.stdin.flush()
        published = {}
        for proc in pubs:
            line = json.loads(_readline(proc, duration + 30))
            published[line['topic']] = line['published']
        time.sleep(0.5)
        summary = _call(node, 'stop_success')
        cpu1, wall1 = cpu_seconds(recorder.pid), time.monotonic()
    finally:
        for proc in pubs:
            procs.stop(proc, signal.SIGKILL, timeout=10.0)
        procs.stop(recorder, signal.SIGINT, timeout=30.0)
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown()
    bag = info(started['path'])
    bursts = loss_bursts(started['path'], published.get(JOINTS, 0))
    recorded = {t['name']: t['count'] for t in bag['topics']}
    per_topic = {t: {'published': published.get(t, 0), 'recorded': recorded.get(t, 0),
                     'lost': published.get(t, 0) - recorded.get(t, 0)} for t in topics}
    return {
        'published': sum(published.values()), 'recorded': sum(recorded.values()),
        'lost': sum(v['lost'] for v in per_topic.values()),
        'cpu_cores': (cpu1 - cpu0) / (wall1 - wall0),
        'mb_per_s': bag['bytes'] / 1e6 / max(bag['duration_s'], 1e-9),
        'duration_s': bag['duration_s'], 'per_topic': per_topic,
        'bag_mb': bag['bytes'] / 1e6, 'segments': len(summary['segments']),
        'recorder_cpu_window_s': wall1 - wall0, 'bag': started['path'],
        'load_avg_1min_after': os.getloadavg()[0], 'joint_loss_bursts': bursts,
        'timeline': timeline,
    }


def _diagnostics(msg, timeline):
    for status in msg.status:
        if status.name == '/recorder':
            values = {kv.key: kv.value for kv in status.values}
            if values.get('state') == 'recording':
                timeline.append({k: values.get(k) for k in (
                    'messages', 'mb_written', 'write_mb_per_s', 'queued_mb', 'dropped',
                    'lost_in_transport')})


def loss_bursts(path, published):
    """Missing joint-state sequence numbers as [[seconds into the episode, count], ...]."""
    import numpy as np
    from rosbags.typesys import Stores, get_typestore

    from dial_ros.bags import read_messages
    store = get_typestore(Stores.ROS2_KILTED)
    seq, times = [], []
    for _, msgtype, log_ns, data in read_messages(path, [JOINTS]):
        seq.append(int(store.deserialize_cdr(data, msgtype).position[0]))
        times.append(log_ns)
    if not seq:
        return [[0.0, published]]
    seq, times = np.array(seq), (np.array(times) - times[0]) * 1e-9
    gaps = np.diff(np.concatenate([[-1], seq, [published]])) - 1
    where = np.flatnonzero(gaps > 0)
    at = np.concatenate([times, times[-1:]])
    return [[round(float(at[i]), 2), int(gaps[i])] for i in where[:20]]


def table(result):
    lines = [f'{"topic":<28} {"published":>9} {"recorded":>9} {"lost":>6}']
    for topic, row in result['per_topic'].items():
        lines.append(f'{topic:<28} {row["published"]:>9} {row["recorded"]:>9} '
                     f'{row["lost"]:>6}')
    lines.append(f'{"total":<28} {result["published"]:>9} {result["recorded"]:>9} '
                 f'{result["lost"]:>6}')
    if result['joint_loss_bursts']:
        lines.append(f'{JOINTS} losses [s into the episode, messages]: '
                     f'{result["joint_loss_bursts"]}')
    lines.append(f'recorder CPU {result["cpu_cores"]:.2f} cores, {result["mb_per_s"]:.1f} '
                 f'MB/s, {result["duration_s"]:.1f} s, {result["segments"]} segment(s), '
                 f'{result["bag_mb"]:.0f} MB')
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--json', help='write the result here')
    parser.add_argument('--duration', type=float, default=60.0)
    parser.add_argument('--keep', help='keep the episode bag under this folder')
    parser.add_argument('--publish', help=argparse.SUPPRESS)
    parser.add_argument('--rate', type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    if args.publish:
        dial_ros.apply_ros_env_defaults()
        publish(args.publish, args.rate, args.duration)
        return 0
    os.environ['ROS_DOMAIN_ID'] = str(procs.new_domain_id('bench_recorder'))
    dial_ros.apply_ros_env_defaults()
    out_dir = args.keep or tempfile.mkdtemp(prefix='dial_bench_recorder_')
    os.makedirs(out_dir, exist_ok=True)
    try:
        result = run(args.duration, out_dir)
    finally:
        if not args.keep:
            shutil.rmtree(out_dir, ignore_errors=True)
    print(table(result))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
