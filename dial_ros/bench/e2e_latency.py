"""End-to-end latency: camera frame stamp -> the first joint command computed from it.

    python -m dial_ros.bench.e2e_latency --json OUT.json [--duration 30]

Runs the humanoid launch on the embedded sim (its own ROS domain, localhost discovery) and
listens from this process. The controller stamps every action chunk with the observation
(camera frame) it was computed from; the scheduler switches to a chunk the moment it is
pushed, so the first command that arrives after a chunk with a new observation stamp is
the first command computed from that frame. Latency = arrival of that command (DDS receive
time, this host's clock) - the frame's stamp (the sim stamps frames with the same clock).
Also reported, stage by stage: camera -> image published (the sim's render: a real camera's
readout), image published -> first command (the image's DDS source timestamp, i.e. what the
stack adds once the frame exists), camera -> observation latent (+ transport, ViT),
camera -> chunk (+ System-1), and the age of the intent each chunk used (System-2 runs
asynchronously, so its intent is older than the frame).
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time

import numpy as np

import dial_ros
from dial_ros import procs

dial_ros.apply_ros_env_defaults()


def percentiles(values):
    if not values:
        return {'p50_ms': None, 'p99_ms': None, 'max_ms': None}
    arr = np.asarray(values) * 1e3
    return {'p50_ms': round(float(np.percentile(arr, 50)), 2),
            'p99_ms': round(float(np.percentile(arr, 99)), 2),
            'max_ms': round(float(arr.max()), 2)}


class Listener:
    """Pairs chunks (by observation stamp) with the first command that follows them."""

    def __init__(self, node):
        from sensor_msgs.msg import Image
        from std_msgs.msg import Float64MultiArray

        from dial_ros.msg import ActionChunk, LatentTensor
        from dial_ros.nodes.qos import QOS_COMMAND, QOS_LATENT, QOS_SENSOR
        from dial_ros.topics import TOPIC_CHUNK, TOPIC_COMMAND, TOPIC_IMAGE, TOPIC_OBSERVATION
        self.lock = threading.Lock()
        self.pending = None  # (observation stamp, chunk arrival)
        self.seen = set()
        self.e2e, self.to_chunk, self.intent_age, self.to_latent = [], [], [], []
        # frame stamp -> when the sim published the image (its render time: a real camera's
        # readout), and the latency counted from that publication instead of the stamp
        self.published, self.to_image, self.from_published = {}, [], []
        node.create_subscription(ActionChunk, TOPIC_CHUNK, self.on_chunk,
                                 QOS_LATENT)
        node.create_subscription(LatentTensor, TOPIC_OBSERVATION, self.on_observation,
                                 QOS_LATENT)
        node.create_subscription(Image, TOPIC_IMAGE, self.on_image, QOS_SENSOR)
        node.create_subscription(Float64MultiArray, TOPIC_COMMAND, self.on_command,
                                 QOS_COMMAND)

    def on_chunk(self, msg, info):
        from dial_ros.codecs import stamp_to_sec
        obs = stamp_to_sec(msg.observation_stamp)
        arrived = info['received_timestamp'] * 1e-9
        with self.lock:
            if obs in self.seen or obs <= 0:
                return
            self.seen.add(obs)
            self.pending = (obs, arrived)
            self.to_chunk.append(arrived - obs)
            latent = stamp_to_sec(msg.latent_stamp)
            if latent > 0:
                self.intent_age.append(obs - latent)

    def on_image(self, msg, info):
        from dial_ros.codecs import stamp_to_sec
        stamp, sent = stamp_to_sec(msg.header.stamp), info['source_timestamp'] * 1e-9
        with self.lock:
            self.published[stamp] = sent
            self.to_image.append(sent - stamp)
            if len(self.published) > 200:
                self.published.pop(next(iter(self.published)))

    def on_observation(self, msg, info):
        from dial_ros.codecs import stamp_to_sec
        with self.lock:
            self.to_latent.append(info['received_timestamp'] * 1e-9
                                  - stamp_to_sec(msg.header.stamp))

    def on_command(self, msg, info):
        arrived = info['received_timestamp'] * 1e-9
        with self.lock:
            if self.pending is not None and arrived >= self.pending[1]:
                self.e2e.append(arrived - self.pending[0])
                published = self.published.get(self.pending[0])
                if published is not None:
                    self.from_published.append(arrived - published)
                self.pending = None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--json', required=True)
    parser.add_argument('--duration', type=float, default=30.0, help='measured seconds')
    parser.add_argument('--warmup', type=float, default=60.0,
                        help='max seconds to wait for the first chunk')
    parser.add_argument('--control-rate-hz', type=int, default=200)
    args = parser.parse_args(argv)
    domain = procs.new_domain_id('e2e_latency')
    launch = procs.start(
        [sys.executable, '-m', 'dial_ros.launch_runner', 'dial_ros', 'humanoid.launch.py',
         f'control_rate_hz:={args.control_rate_hz}',
         'foresight_view:=false',  # the robot's launch: no panel (off with sim:=false)
         f'duration:={args.duration + args.warmup + 30}'],
        domain, stderr=subprocess.DEVNULL)
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    node = rclpy.create_node('e2e_latency_bench', context=context)
    listener = Listener(node)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()
    try:
        deadline = time.monotonic() + args.warmup
        while not listener.e2e and time.monotonic() < deadline:
            time.sleep(0.2)
        with listener.lock:  # measure from here on
            listener.e2e.clear()
            listener.to_chunk.clear()
            listener.intent_age.clear()
            listener.to_latent.clear()
            listener.to_image.clear()
            listener.from_published.clear()
        time.sleep(args.duration)
        with listener.lock:
            e2e, to_chunk = list(listener.e2e), list(listener.to_chunk)
            intent_age, to_latent = list(listener.intent_age), list(listener.to_latent)
            to_image, from_published = list(listener.to_image), list(listener.from_published)
    finally:
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        procs.stop(launch, signal.SIGINT, timeout=40)
    result = {'samples': len(e2e), **percentiles(e2e),
              'camera_to_image_published': percentiles(to_image),
              'image_published_to_first_command': percentiles(from_published),
              'camera_to_observation_latent': percentiles(to_latent),
              'camera_to_chunk': percentiles(to_chunk),
              'intent_age_at_chunk': percentiles(intent_age),
              'mean_ms': round(statistics.mean(e2e) * 1e3, 2) if e2e else None,
              'duration_s': args.duration, 'control_rate_hz': args.control_rate_hz,
              'load_average': os.getloadavg()}
    print('metric | p50 ms | p99 ms | max ms | samples')
    print(f"camera -> first command | {result['p50_ms']} | {result['p99_ms']} | "
          f"{result['max_ms']} | {len(e2e)}")
    for key in ('camera_to_image_published', 'image_published_to_first_command',
                'camera_to_observation_latent', 'camera_to_chunk', 'intent_age_at_chunk'):
        r = result[key]
        print(f"{key} | {r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} |")
    with open(args.json, 'w') as f:
        json.dump(result, f, indent=2)
    return 0 if e2e else 1


if __name__ == '__main__':
    sys.exit(main())
