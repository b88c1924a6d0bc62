"""ROS side of recording and playback: message classes, QoS <-> dicts, raw subscriptions.

:class:`TopicTap` subscribes, WITHOUT deserialising (``raw=True``), to a set of topics (or
all of them) as their publishers appear in the graph: the type comes from the graph, the
subscription QoS adapts to the publishers like rosbag2's (reliable only when every
publisher is reliable, transient local only when every publisher is), and the publishers'
offered QoS profiles are handed on for metadata.yaml. Call ``refresh()`` periodically.
"""
import collections
import importlib
import logging
import time

from rclpy.duration import Duration
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from dial_ros.bags.types import normalise_type

LOG = logging.getLogger(__name__)
HIDDEN = ('/rosout', '/parameter_events')
# Types whose messages are large: their queues cost memory, so they get the smaller depth.
LARGE_TYPES = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage',
               'sensor_msgs/msg/PointCloud2', 'dial_ros/msg/LatentTensor')


def import_message(msgtype):
    """``pkg/msg/Type`` -> the generated Python class; ValueError naming what is missing."""
    package, _, name = normalise_type(msgtype).split('/')
    try:
        return getattr(importlib.import_module(f'{package}.msg'), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f'{msgtype}: Python message package not installed ({err})') from None


def _time(duration):
    ns = duration.nanoseconds if hasattr(duration, 'nanoseconds') else int(duration)
    return {'sec': int(ns // 1_000_000_000), 'nsec': int(ns % 1_000_000_000)}


def qos_to_dict(profile):
    """rclpy QoSProfile -> rosbag2 v9 QoS dict."""
    return {'history': profile.history.name.lower(), 'depth': int(profile.depth),
            'reliability': profile.reliability.name.lower(),
            'durability': profile.durability.name.lower(),
            'deadline': _time(profile.deadline), 'lifespan': _time(profile.lifespan),
            'liveliness': profile.liveliness.name.lower(),
            'liveliness_lease_duration': _time(profile.liveliness_lease_duration),
            'avoid_ros_namespace_conventions': bool(profile.avoid_ros_namespace_conventions)}


def playback_qos(offered, default_depth=10):
    """A publisher QoSProfile for replaying a topic recorded with ``offered`` QoS dicts.

    Reliability and durability follow the recorded publishers when they agree (reliable /
    transient local only when all were); depth is the recorded one when known, else 10.
    Deadline, lifespan and liveliness are left at their defaults.
    """
    offered = [q for q in offered or [] if isinstance(q, dict)]
    reliable = bool(offered) and all(q.get('reliability') == 'reliable' for q in offered)
    latched = bool(offered) and all(q.get('durability') == 'transient_local' for q in offered)
    depths = [int(q.get('depth') or 0) for q in offered if q.get('history') == 'keep_last']
    return QoSProfile(
        depth=max(depths + [default_depth]), history=HistoryPolicy.KEEP_LAST,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=(DurabilityPolicy.TRANSIENT_LOCAL if latched
                    else DurabilityPolicy.VOLATILE))


def subscription_qos(publishers, depth):
    """The QoS that receives from every publisher in ``publishers`` (TopicEndpointInfo)."""
    profiles = [p.qos_profile for p in publishers]
    reliable = profiles and all(p.reliability == ReliabilityPolicy.RELIABLE for p in profiles)
    latched = profiles and all(p.durability == DurabilityPolicy.TRANSIENT_LOCAL
                               for p in profiles)
    return QoSProfile(
        depth=depth, history=HistoryPolicy.KEEP_LAST,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=(DurabilityPolicy.TRANSIENT_LOCAL if latched
                    else DurabilityPolicy.VOLATILE),
        lifespan=Duration(nanoseconds=0))


class TopicTap:
    """Raw subscriptions that follow the graph; see the module docstring.

    ``on_message(topic, msgtype, offered_qos, data, log_ns, publish_ns)`` runs in the
    executor; ``log_ns`` is the middleware's receive time (system clock, ns). ``lost``
    counts messages lost in transport (gaps in each publisher's sequence numbers). Subscription
    queues hold ``depth`` messages of LARGE_TYPES and ``small_depth`` of other types (what
    a briefly starved executor can catch up on: 1000 is 2 s of 500 Hz joint states).
    """

    def __init__(self, node, on_message, topics=(), all_topics=False, depth=100,
                 small_depth=None, exclude=HIDDEN, callback_group=None):
        self.node, self.on_message = node, on_message
        self.wanted = [t if t.startswith('/') else '/' + t for t in topics]
        self.all_topics, self.depth, self.exclude = all_topics, depth, set(exclude)
        self.small_depth = depth if small_depth is None else small_depth
        self.group = callback_group
        self.subs = {}       # topic -> (subscription, msgtype, qos key, offered dicts)
        self.lost = collections.Counter()   # topic -> gaps in publishers' sequence numbers
        self._refused = set()
        self._seq = {}

    def refresh(self):
        """Subscribe to new topics; re-subscribe where the publishers' QoS changed."""
        graph = dict(self.node.get_topic_names_and_types())
        names = sorted(graph) if self.all_topics else self.wanted
        for topic in names:
            if topic in self.exclude or topic not in graph:
                continue
            types = graph[topic]
            if len(types) > 1 and topic not in self._refused:
                LOG.warning('%s: published with several types %s; recording %s', topic, types,
                            types[0])
            publishers = [p for p in self.node.get_publishers_info_by_topic(topic)
                          if p.node_name != self.node.get_name()]
            if not publishers:
                continue
            self._subscribe(topic, types[0], publishers)

    def _subscribe(self, topic, msgtype, publishers):
        qos = subscription_qos(publishers, self.depth if msgtype in LARGE_TYPES
                               else self.small_depth)
        key = (qos.reliability, qos.durability)
        offered = [qos_to_dict(p.qos_profile) for p in publishers]
        old = self.subs.get(topic)
        if old is not None and old[1] == msgtype and old[2] == key:
            if old[3] != offered:
                self.subs[topic] = old[:3] + (offered,)
            return
        try:
            cls = import_message(msgtype)
        except ValueError as err:
            if topic not in self._refused:
                self._refused.add(topic)
                LOG.error('%s: cannot subscribe: %s', topic, err)
            return
        if old is not None:
            self.node.destroy_subscription(old[0])
            LOG.info('%s: publishers changed; re-subscribing (%s, %s)', topic,
                     qos.reliability.name, qos.durability.name)

        def callback(data, info, topic=topic, msgtype=msgtype):
            log_ns = info.get('received_timestamp') or time.time_ns()
            seq, gid = info.get('publication_sequence_number'), info.get('publisher_gid')
            if seq is not None and gid is not None:
                key = (topic, bytes(gid['data']))
                last = self._seq.get(key)
                if last is not None and seq > last + 1:
                    self.lost[topic] += seq - last - 1     # lost between DDS and us
                self._seq[key] = seq
            entry = self.subs.get(topic)
            self.on_message(topic, msgtype, entry[3] if entry else [], data, log_ns,
                            info.get('source_timestamp') or log_ns)
        sub = self.node.create_subscription(cls, topic, callback, qos, raw=True,
                                            callback_group=self.group)
        self.subs[topic] = (sub, msgtype, key, offered)
        LOG.info('%s: recording %s (%s, %s, depth %d, %d publisher(s))', topic, msgtype,
                 qos.reliability.name.lower(), qos.durability.name.lower(), qos.depth,
                 len(publishers))
