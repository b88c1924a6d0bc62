"""``python -m dial_ros.bags record``: record topics of the live graph into one bag.

A stand-in for ``ros2 bag record`` (not installable here): raw subscriptions (types and QoS
from the graph, topics that appear later are picked up), the same writer and rotation as
the demo recorder, SIGINT / SIGTERM finalise the bag.
"""
import logging
import signal
import threading
import time

import dial_ros
from dial_ros.bags.episodes import EpisodeRecorder

dial_ros.apply_ros_env_defaults()

import rclpy  # noqa: E402
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor  # noqa: E402
from rclpy.signals import SignalHandlerOptions  # noqa: E402

from dial_ros.bags.ros_topics import TopicTap  # noqa: E402

LOG = logging.getLogger(__name__)


def parse_tags(items):
    """['key=value', ...] -> dict; ValueError naming a bad item."""
    tags = {}
    for item in items or []:
        key, sep, value = item.partition('=')
        if not sep or not key:
            raise ValueError(f'--tag {item!r}: expected key=value')
        tags[key] = value
    return tags


def record(args):
    """Run the recorder until SIGINT/SIGTERM or ``--duration``; returns the exit code."""
    if not args.topics and not args.all:
        raise ValueError('record: name topics or pass --all')
    options = {'max_segment_mb': args.max_segment_mb, 'max_segment_s': args.max_segment_s,
               'chunk_s': args.chunk_s, 'compression': args.compression}
    recorder = EpisodeRecorder(args.output, options, stop_grace_s=0.0)  # stops after spin
    recorder.start(parse_tags(args.tag), path=args.output)
    # our own handlers only: the signal just ends the loop below, which then stops the
    # executor and finalises the bag in order (rclpy's handler shut the context down under
    # the spinning thread, and the stop once hung past 30 s)
    rclpy.init(args=['--ros-args'], signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node('bag_recorder')
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    tap = TopicTap(node, lambda *m: recorder.submit(*m), args.topics, args.all,
                   args.queue_depth)
    node.create_timer(1.0, tap.refresh)
    tap.refresh()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    thread = threading.Thread(target=_spin, args=(executor, stop), daemon=True)
    thread.start()
    LOG.info('recording into %s (Ctrl-C stops)', args.output)
    deadline = time.monotonic() + args.duration if args.duration > 0 else float('inf')
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            stop.wait(0.1)
    except KeyboardInterrupt:
        pass
    stop.set()
    executor.shutdown(timeout_sec=2.0)
    thread.join(timeout=3.0)
    summary = recorder.stop('')
    recorder.close()
    node.destroy_node()
    rclpy.try_shutdown()
    print(f'{summary["path"]}: {summary["messages"]} messages in '
          f'{len(summary["segments"])} segment(s); dropped {recorder.dropped}')
    for topic, count in sorted(summary['topics'].items()):
        print(f'  {topic}: {count}')
    return 0 if summary['error'] is None else 1


def _spin(executor, stop):
    try:
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.1)
    except (ExternalShutdownException, rclpy.executors.ShutdownException):
        pass
