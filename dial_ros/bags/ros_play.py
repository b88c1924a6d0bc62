"""``python -m dial_ros.bags play``: publish a bag into the live graph with its timing.

A stand-in for ``ros2 bag play``: raw CDR bytes are published (no deserialisation) at the
recorded log-time spacing divided by ``--rate``, each topic with the QoS its publishers
offered when it was recorded (reliability and durability; see ``playback_qos``).
``--clock HZ`` publishes rosgraph_msgs/Clock on /clock with the bag time, so nodes run with
``use_sim_time:=true`` follow the bag. Ctrl-C / SIGTERM stop cleanly.
"""
import logging
import signal
import threading
import time

import dial_ros
from dial_ros.bags.reader import info, read_messages

dial_ros.apply_ros_env_defaults()

import rclpy  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402

from dial_ros.bags.ros_topics import import_message, playback_qos  # noqa: E402

LOG = logging.getLogger(__name__)
SPIN_S = 0.002  # busy-wait the last 2 ms before a message is due (sleep is coarser)
SETTLE_S = 0.5


class _Stop(Exception):
    pass


def _wait_until(target, stop):
    while True:
        left = target - time.monotonic()
        if stop.is_set():
            raise _Stop()
        if left <= 0:
            return
        if left > SPIN_S:
            stop.wait(min(left - SPIN_S, 0.1))


def play(args):
    """Play ``args.bag``; returns the exit code."""
    summary = info(args.bag)
    wanted = set(args.topics or [t['name'] for t in summary['topics']])
    missing = wanted - {t['name'] for t in summary['topics']}
    if missing:
        raise ValueError(f'{args.bag}: no topic(s) {sorted(missing)} in the bag')
    if args.rate <= 0:
        raise ValueError(f'--rate must be > 0, got {args.rate}')
    rclpy.init(args=['--ros-args'])
    node = rclpy.create_node('bag_player')
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    publishers = {}
    for topic in summary['topics']:
        if topic['name'] in wanted:
            cls = import_message(topic['type'])
            publishers[topic['name']] = node.create_publisher(cls, topic['name'],
                                                              playback_qos(topic['qos']))
    clock = None
    if args.clock:
        from rosgraph_msgs.msg import Clock
        clock = node.create_publisher(Clock, '/clock', QoSProfile(
            depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
    count = 0
    try:
        _wait_for_subscribers(publishers, args.wait_for_subscribers, stop)
        if args.delay > 0:
            stop.wait(args.delay)
        while not stop.is_set():
            count += _play_once(args, summary, publishers, clock, stop)
            if not args.loop:
                break
    except (_Stop, KeyboardInterrupt):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    print(f'{args.bag}: published {count} messages')
    return 0


def _wait_for_subscribers(publishers, timeout, stop):
    """Wait until every publisher has matched a subscriber, then SETTLE_S more.

    Discovery is not symmetric: a reliable reader drops data from a writer it has not
    matched yet.
    """
    deadline = time.monotonic() + timeout
    while timeout > 0 and time.monotonic() < deadline and not stop.is_set():
        if all(p.get_subscription_count() > 0 for p in publishers.values()):
            stop.wait(SETTLE_S)
            return
        time.sleep(0.05)
    if timeout > 0:
        LOG.warning('no subscriber after %.1f s on %s; playing anyway', timeout,
                    [t for t, p in publishers.items() if not p.get_subscription_count()])


def _play_once(args, summary, publishers, clock, stop):
    start_ns = summary['start_ns'] + int(args.start_offset * 1e9)
    t0 = time.monotonic()
    clock_thread = None
    state = {}
    if clock is not None:
        clock_thread = threading.Thread(target=_publish_clock,
                                        args=(clock, args, start_ns, t0, stop, state),
                                        daemon=True)
        clock_thread.start()
    count = 0
    try:
        for topic, _, log_ns, data in read_messages(args.bag, list(publishers), start_ns):
            _wait_until(t0 + (log_ns - start_ns) * 1e-9 / args.rate, stop)
            publishers[topic].publish(bytes(data))
            count += 1
    finally:
        if clock_thread is not None:
            state['done'] = True
            clock_thread.join(timeout=1.0)
    return count


def _publish_clock(pub, args, start_ns, t0, stop, state):
    from rosgraph_msgs.msg import Clock
    period = 1.0 / args.clock
    tick = 0
    while not stop.is_set() and not state.get('done'):
        bag_ns = start_ns + int((time.monotonic() - t0) * args.rate * 1e9)
        msg = Clock()
        msg.clock.sec, msg.clock.nanosec = divmod(bag_ns, 1_000_000_000)
        pub.publish(msg)
        tick += 1
        stop.wait(max(0.0, t0 + tick * period - time.monotonic()))
