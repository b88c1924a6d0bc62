"""What every dial_ros node shares: parameters from the schema, diagnostics, main().

Nodes are thin adapters: they convert messages, call the middleware-free core and publish.
Topic names, QoS profiles and message conversions live in ``dial_ros.topics``,
``dial_ros.nodes.qos`` and ``dial_ros.codecs``; they are re-exported here for the nodes.
"""
import dataclasses
import logging
import signal
import sys
import threading
import time
import typing

import numpy as np

import dial_ros
from dial_ros.codecs import fill_image
from dial_ros.schema import described_fields, validate
from dial_ros.topics import TOPIC_DIAGNOSTICS

dial_ros.apply_ros_env_defaults()  # before any rclpy context exists

import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue  # noqa: E402
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange,  # noqa: E402
                                ParameterDescriptor, SetParametersResult)
from rclpy.exceptions import InvalidParameterTypeException  # noqa: E402
from rclpy.exceptions import InvalidParameterValueException  # noqa: E402
from rclpy.executors import ExternalShutdownException  # noqa: E402
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from dial_ros.alloc import keep_large_buffers  # noqa: E402

# Re-exported for the node files (new code imports them from their own modules).
from dial_ros.codecs import (fill_latent, image_to_rgb, instruction_id,  # noqa: E402,F401
                             now_sec, read_latent, sec_to_stamp, stamp_to_sec)
from dial_ros.nodes.qos import (QOS_COMMAND, QOS_LATCHED, QOS_LATENT,  # noqa: E402,F401
                                QOS_SENSOR)
from dial_ros.topics import (TOPIC_CHUNK, TOPIC_COMMAND, TOPIC_COMMAND_STATE,  # noqa: E402,F401
                             TOPIC_ESTOP, TOPIC_IMAGE, TOPIC_INSTRUCTION, TOPIC_INTENT,
                             TOPIC_JOINT_STATES, TOPIC_OBJECT_POSE, TOPIC_OBSERVATION,
                             TOPIC_OBSERVATION_JOINT_STATE, TOPIC_PROGRESS, TOPIC_SUCCESS,
                             TOPIC_TRAJECTORY)

LOG = logging.getLogger(__name__)


# --- parameters --------------------------------------------------------------------------
def _descriptor(name, meta, value):
    desc = ParameterDescriptor(name=name, description=meta['description'],
                               read_only=bool(meta.get('read_only')))
    if meta.get('unit'):
        desc.description += f' [{meta["unit"]}]'
    low, high = meta.get('low'), meta.get('high')
    if isinstance(value, bool):
        pass
    elif isinstance(value, float) and low is not None and high is not None:
        desc.floating_point_range = [FloatingPointRange(from_value=float(low),
                                                        to_value=float(high), step=0.0)]
    elif isinstance(value, int) and low is not None and high is not None:
        desc.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=1)]
    if meta.get('choices'):
        desc.additional_constraints = 'one of: ' + ', '.join(map(str, meta['choices']))
    return desc


def declare_params(node, params, on_change=None, check_now=True):
    """Declare every schema field of ``params`` as a ROS parameter and keep them in sync.

    Ranges and descriptions come from the schema (rqt_reconfigure shows sliders); rcl rejects
    values out of range before our callback runs; the callback re-validates the whole
    schema (choices, cross-field rules) and rejects with the reason. On success the
    dataclass is updated and ``on_change(name, value)`` is called. At start-up a bad value
    ends the node with a SystemExit naming it; ``check_now=False`` leaves the cross-field
    ``check()`` to the caller (a lifecycle node runs it in configure and fails that).
    """
    fields = {}
    overrides = getattr(node, '_parameter_overrides', {})
    for f, meta in described_fields(params):
        default = getattr(params, f.name)
        given = overrides.get(f.name)
        # `-p rate:=10` or `rate: 10` in YAML is an integer: accept it for a float setting
        if (given is not None and isinstance(default, float)
                and given.type_ == Parameter.Type.INTEGER):
            overrides[f.name] = Parameter(f.name, Parameter.Type.DOUBLE, float(given.value))
        try:
            node.declare_parameter(f.name, default, _descriptor(f.name, meta, default))
        except (InvalidParameterValueException, InvalidParameterTypeException) as err:
            raise SystemExit(f'{node.get_name()}: bad parameter {f.name}: {err}') from None
        fields[f.name] = f
    hints = typing.get_type_hints(type(params))
    for name in fields:
        value = node.get_parameter(name).value
        if hints.get(name) is float and isinstance(value, int):
            value = float(value)
        setattr(params, name, value)
    try:
        validate(params)
        if check_now and hasattr(params, 'check'):
            params.check()
    except ValueError as err:
        raise SystemExit(f'{node.get_name()}: bad parameter: {err}') from None

    def callback(changes):
        candidate = dataclasses.replace(params)
        for p in changes:
            if p.name not in fields:
                continue
            value = p.value
            if hints.get(p.name) is float and isinstance(value, int):
                value = float(value)
            setattr(candidate, p.name, value)
        try:
            validate(candidate)
            check = getattr(candidate, 'check', None)
            if check:
                check()
        except ValueError as err:
            return SetParametersResult(successful=False, reason=str(err))
        for p in changes:
            if p.name in fields:
                setattr(params, p.name, getattr(candidate, p.name))
                if on_change:
                    on_change(p.name, getattr(params, p.name))
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(callback)
    return params


# --- images ------------------------------------------------------------------------------
def rgb_to_image(rgb, stamp_s, frame_id=''):
    """(H, W, 3) uint8 RGB -> a new sensor_msgs/Image (rgb8)."""
    return fill_image(Image(), rgb, stamp_s, frame_id)


# --- diagnostics -------------------------------------------------------------------------
class Diagnostics:
    """Publishes one DiagnosticStatus per call on /diagnostics."""

    LEVELS = {'ok': DiagnosticStatus.OK, 'warn': DiagnosticStatus.WARN,
              'error': DiagnosticStatus.ERROR, 'stale': DiagnosticStatus.STALE}

    def __init__(self, node):
        self.node = node
        self.pub = node.create_publisher(DiagnosticArray, TOPIC_DIAGNOSTICS, 10)

    def publish(self, level, message, values):
        status = DiagnosticStatus(level=self.LEVELS[level],
                                  name=self.node.get_fully_qualified_name(),
                                  message=message, hardware_id='dial_ros')
        status.values = [KeyValue(key=str(k), value=_fmt(v)) for k, v in values.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.pub.publish(msg)


def _fmt(value):
    if isinstance(value, float):
        return f'{value:.4g}'
    return str(value)


# --- main --------------------------------------------------------------------------------
def run_node(make_node, args=None, threads=1):
    """rclpy.init, build the node, spin until SIGINT/SIGTERM, shut down cleanly (exit 0).

    Exit 1 when a lifecycle node's autostart failed (the node logged why).

    Single-threaded by default: rclpy's MultiThreadedExecutor (Kilted 9.1.2) re-submits a
    task that waits in its pool on every spin; when another thread of the node keeps the
    GIL busy (a command stream, a ViT worker, a sim loop) it piles up thousands of copies
    per second, takes a core and delays callbacks by up to 1.5 s (measured). Our nodes keep
    their busy work in threads of their own, so one executor thread is enough.
    """
    logging.basicConfig(level=logging.INFO)
    keep_large_buffers()  # 512 KiB latents: no page faults per message (dial_ros/alloc.py)
    rclpy.init(args=args if args is not None else sys.argv)
    signal.signal(signal.SIGTERM, _interrupt)
    node = None
    try:
        node = make_node()
        if getattr(node, 'startup_error', ''):  # a lifecycle node whose autostart failed
            return 1
        executor = (MultiThreadedExecutor(num_threads=threads) if threads > 1
                    else SingleThreadedExecutor())
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:  # noqa: BLE001 - e.g. RCLError building a wait set mid-shutdown
        if rclpy.ok():
            raise
    finally:
        # rclpy's SIGINT handler both shuts the context down and leaves a KeyboardInterrupt
        # pending; raised inside close() it cut the lifecycle shutdown short (the node stuck
        # in 'shuttingdown', its command thread ticking into a destroyed publisher)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        if node is not None:
            close = getattr(node, 'close', None)
            if close:
                close()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


def _interrupt(*_):
    raise KeyboardInterrupt()


# --- added for the perception and intent nodes --------------------------------------------
class WindowStats:
    """Count, mean and max of samples since the last ``take()`` (one diagnostics period).

    Thread-safe: a worker thread adds, the diagnostics timer takes.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._reset()

    def _reset(self):
        self._count, self._sum, self._max = 0, 0.0, 0.0

    def add(self, value):
        with self._lock:
            self._count += 1
            self._sum += value
            self._max = max(self._max, value)

    def take(self):
        """Return ``(count, mean, max)`` over the period and start a new one."""
        with self._lock:
            out = (self._count, self._sum / self._count if self._count else 0.0, self._max)
            self._reset()
            return out


def load_policy(checkpoint, embodiment, seed, device='cpu', threads=1, part=None):
    """Return (DialPolicy, model_id); RuntimeError naming the cause when the model won't load.

    ``part``: 'vision' (perception), 'system2' (intent) or 'system1' (controller) loads only
    that part of the model (``dial_ros.model.parts``); None the whole model. torch is
    imported here so that nodes without a model never pay for it.
    """
    import torch

    from dial_ros.model.default import load_model
    from dial_ros.model.policy import DialPolicy

    torch.set_num_threads(threads)
    try:
        model, model_id = load_model(checkpoint, embodiment, seed, device, part)
        return DialPolicy(model, embodiment, device), model_id
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        what = f'the {part} part of the model' if part else 'the model'
        raise RuntimeError(f'cannot load {what} (checkpoint {checkpoint!r}, embodiment '
                           f'{embodiment!r}): {err}') from err


class Throttle:
    """Log at most once per ``period_s`` per key (rclpy's throttle is per call site only).

    A node that funnels every rejection through one helper would otherwise let one noisy
    problem hide all others; keyed, each distinct problem is reported, with a count of the
    repeats that were held back.
    """

    def __init__(self, logger, period_s=2.0):
        self.logger = logger
        self.period_s = period_s
        self._last = {}  # key -> (monotonic time of the last log, suppressed since)

    def __call__(self, level, key, text):
        now = time.monotonic()
        last, held = self._last.get(key, (-float('inf'), 0))
        if now - last < self.period_s:
            self._last[key] = (last, held + 1)
            return
        self._last[key] = (now, 0)
        text += f' ({held} more since the last report)' if held else ''
        # one call site per severity: rclpy refuses two severities from one line
        if level == 'error':
            self.logger.error(text)
        elif level == 'warning':
            self.logger.warning(text)
        else:
            self.logger.info(text)


# --- added for the controller ------------------------------------------------------------
class JointOrder:
    """Read sensor_msgs/JointState positions BY NAME into a fixed joint order.

    Drivers order (and add) joints as they like. ``positions(msg)`` returns a float64 vector
    in ``joint_names`` order and ignores extra joints; ValueError names missing joints, a
    names/positions length mismatch or NaN/Inf. The index is cached per distinct name list.
    """

    def __init__(self, joint_names):
        self.joint_names = list(joint_names)
        self._index = {}

    def positions(self, msg):
        names = tuple(msg.name)
        index = self._index.get(names)
        if index is None:
            where = {n: i for i, n in enumerate(names)}
            missing = [j for j in self.joint_names if j not in where]
            if missing:
                raise ValueError(f'joint_state: missing joints {missing[:5]} ({len(missing)} '
                                 f'of {len(self.joint_names)})')
            if len(self._index) > 8:  # a publisher that reorders every message
                self._index.clear()
            index = self._index[names] = np.array([where[j] for j in self.joint_names])
        if len(msg.position) != len(names):
            raise ValueError(f'joint_state: {len(msg.position)} positions for {len(names)} '
                             f'names')
        q = np.asarray(msg.position, np.float64)[index]
        if not np.all(np.isfinite(q)):
            bad = [self.joint_names[i] for i in np.flatnonzero(~np.isfinite(q))[:5]]
            raise ValueError(f'joint_state: NaN/Inf position for {bad}')
        return q
