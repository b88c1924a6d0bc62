"""The embedded GR1 humanoid as a ROS 2 node: joint targets in; joints, camera, success out.

    python -m dial_ros.nodes.sim --ros-args -p control_rate_hz:=20 -p task_preset:=distractors

Subscribes:
  /dial/joint_commands   std_msgs/Float64MultiArray, 32 joint position targets (rad) in the
                         order of config/embodiments/gr1_sim.yaml (GR1Sim.joint_names), as a
                         ros2_control JointGroupPositionController takes them. The newest
                         valid one is held until the next; before the first (and after every
                         reset) the robot holds its start pose. Wrong length or NaN/Inf:
                         dropped with a throttled error, the last valid target stays. Targets
                         outside the joint limits by at most ``limit_tolerance_rad`` are
                         clipped to the limits (throttled warning): the controller's safety
                         layer clamps already and float overshoot must not stall the robot;
                         further out the command is dropped as an error (wrong order/units).
Publishes, every step (one header stamp per step = the node clock after stepping):
  /joint_states          sensor_msgs/JointState (names, positions, velocities); reliable
                         depth 10, so best-effort and reliable readers both match
  /sim/task_success      std_msgs/Bool, the task success test: the cube 4 cm above the table
                         (robosuite Lift) for the last 1 s (GR1Sim.held_success)
  /sim/task_progress     std_msgs/Float32, task completion in thirds (GR1Sim.progress: palm
                         at the cube, cube off the table, lifted)
  /sim/object_pose       geometry_msgs/PoseStamped of the cube, frame 'world' (privileged:
                         for the scripted expert and evaluation, never a policy input)
  /camera/head/image_raw sensor_msgs/Image rgb8 from the head camera (sensor-data QoS), every
                         k-th step, k = round(control_rate_hz / camera_rate_hz)
  /diagnostics           target vs achieved step rate, step / render ms, success (1 Hz)
Services:
  ~/reset                std_srvs/Trigger: new episode with the next seed and the current
                         ``task_preset`` + ``task``; ``message`` is JSON {episode, seed,
                         task_preset, task, instruction, stamp (node clock s of the reset)}
``perturbation`` (move_cube, remove_cube, occlude_camera, add_object) changes the running
episode when set, to test the surprise monitor (``dial_ros.sim.perturb``).
Task selection is by parameter (std_srvs has no string service): ``task_preset`` picks a
variant, ``task`` (JSON dict of TaskSpec fields) overrides fields of it, ``seed`` sets the
seed of the next reset; all take effect at the next reset.

Stepping runs in its own thread on absolute deadlines, not an rclpy timer. A step advances
the physics by exactly 1 / control_rate_hz (the 2 ms MuJoCo step is shortened to divide the
period evenly) and the loop waits 1 / (control_rate_hz * real_time_factor) of wall time per
step (real_time_factor 0: no waiting). Stamps are the node clock (wall time), so with a
real_time_factor other than 1 they do not follow sim time. E-stop is not handled here: the
controller holds the robot.
"""
import dataclasses
import json
import math
import sys
import threading
import time

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float32, Float64MultiArray, Header
from std_srvs.srv import Trigger

import dial_ros.sim  # noqa: F401 - chooses the headless GL backend before mujoco is imported
from dial_ros.nodes import common
from dial_ros.schema import setting
from dial_ros.sim import perturb
from dial_ros.sim.gr1_env import GR1Sim, TaskSpec
from dial_ros.sim.headless import release_current_context

# Task variants: TaskSpec fields changed from the training default (GR1Sim's TaskSpec()).
TASK_PRESETS = {
    'default': {},
    'unseen_position': {'cube_x_range': (-0.20, -0.14)},   # 6 cm beyond the training region
    'unseen_appearance': {'cube_rgba': (0.15, 0.45, 0.9, 1.0),
                          'cube_half_size_range': (0.022, 0.024)},
    'distractors': {'n_distractors': 3},
}
QOS_STATE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                       history=HistoryPolicy.KEEP_LAST)
MAX_SLEEP_S = 0.05  # sleep in slices so that stop and rate changes act promptly
LOG_THROTTLE_S = 2.0


def task_spec(preset, overrides):
    """TaskSpec of a preset name plus a JSON dict of field overrides; ValueError if bad."""
    try:
        extra = json.loads(overrides) if overrides.strip() else {}
    except json.JSONDecodeError as err:
        raise ValueError(f'task: not JSON ({err})') from None
    if not isinstance(extra, dict):
        raise ValueError(f'task: expected a JSON object of TaskSpec fields, got {overrides!r}')
    fields = {f.name for f in dataclasses.fields(TaskSpec)}
    unknown = sorted(set(extra) - fields)
    if unknown:
        raise ValueError(f'task: unknown TaskSpec fields {unknown} (known: {sorted(fields)})')
    return dataclasses.replace(TaskSpec(), **{**TASK_PRESETS[preset], **extra})


@dataclasses.dataclass
class Params:
    """Parameters of the sim node (ROS parameters; rates change live)."""

    control_rate_hz: int = setting(20, 'sim steps per second; each advances the physics by '
                                   '1 / rate s', low=1, high=200, unit='Hz')
    real_time_factor: float = setting(1.0, 'sim seconds per wall second (give a float, e.g. '
                                      '2.0); 0 = as fast as possible', low=0.0, high=100.0)
    camera_rate_hz: int = setting(0, 'head camera rate, rendered on every '
                                  'round(control_rate_hz / camera_rate_hz)-th step; 0 = every '
                                  'step', low=0, high=200, unit='Hz')
    publish_camera: bool = setting(True, 'render and publish the head camera')
    camera_size: int = setting(224, 'head camera image side', low=16, high=1024, unit='px',
                               read_only=True)
    seed: int = setting(0, 'seed of the next reset; later resets count up from it',
                        low=0, high=2**31 - 1)
    task_preset: str = setting('default', 'task variant, applied at the next reset',
                               choices=tuple(TASK_PRESETS))
    task: str = setting('', 'JSON object of TaskSpec fields overriding the preset at the next '
                        'reset, e.g. {"n_distractors": 2}; empty = none')
    perturbation: str = setting('', 'applied to the running episode when set (surprise '
                                'tests; reset undoes it); the value is only a trigger',
                                choices=('',) + perturb.KINDS)
    limit_tolerance_rad: float = setting(0.05, 'targets outside the joint limits by up to '
                                         'this are clipped (warning), further out dropped',
                                         low=0.0, high=10.0, unit='rad')

    def check(self):
        """Cross-field rules: the task must build."""
        spec = task_spec(self.task_preset, self.task)
        if not isinstance(spec.n_distractors, int) or not 0 <= spec.n_distractors <= 3:
            raise ValueError(f'task: n_distractors {spec.n_distractors} not in 0..3')


class NodeSim(GR1Sim):
    """GR1Sim with a live control rate whose observations skip the image (rendered apart).

    The node renders only every k-th step, so ``step``/``reset`` must not render.
    """

    def __init__(self, control_hz, **kwargs):
        super().__init__(control_hz=control_hz, **kwargs)
        release_current_context()  # the renderer's context is current here; frames: the loop
        self._base_timestep = float(self.model.opt.timestep)
        self.set_control_hz(control_hz)

    def set_control_hz(self, hz):
        """Make one step last exactly 1 / hz of sim time (substeps of at most 2 ms)."""
        substeps = max(1, math.ceil(1.0 / (hz * self._base_timestep) - 1e-9))
        self.model.opt.timestep = 1.0 / (hz * substeps)
        self._substeps = substeps
        self.control_dt = 1.0 / hz

    def _observation(self):
        renderer, self._renderer = self._renderer, None
        try:
            return super()._observation()
        finally:
            self._renderer = renderer


class SimNode(Node):
    """Owns a GR1Sim and steps it in its own thread; see the module docstring."""

    def __init__(self, **kwargs):
        super().__init__('sim', **kwargs)
        self.params = common.declare_params(self, Params(), on_change=self._on_param)
        p = self.params
        self.sim = NodeSim(p.control_rate_hz, camera_size=p.camera_size)
        self.joint_names = self.sim.joint_names
        self.lower, self.upper = self.sim.joint_limits
        self.throttle = common.Throttle(self.get_logger(), LOG_THROTTLE_S)
        self.lock = threading.Lock()        # the sim: stepped by the loop, reset by the service
        self.counts = {'commands': 0, 'dropped': 0, 'clipped': 0, 'steps': 0, 'images': 0,
                       'missed_deadlines': 0}
        self.step_ms, self.render_ms = common.WindowStats(), common.WindowStats()
        self._command = None                # newest valid target, None: hold the start pose
        self._pending_rate = None
        self._next_seed, self._episode = p.seed, -1
        self._success = False
        self._window = (time.monotonic(), 0)
        self.pub_joints = self.create_publisher(JointState, common.TOPIC_JOINT_STATES,
                                                QOS_STATE)
        self.pub_image = self.create_publisher(Image, common.TOPIC_IMAGE, common.QOS_SENSOR)
        self.pub_success = self.create_publisher(Bool, common.TOPIC_SUCCESS, QOS_STATE)
        self.pub_pose = self.create_publisher(PoseStamped, common.TOPIC_OBJECT_POSE, QOS_STATE)
        self.pub_progress = self.create_publisher(Float32, common.TOPIC_PROGRESS, QOS_STATE)
        self.create_subscription(Float64MultiArray, common.TOPIC_COMMAND, self._on_command,
                                 common.QOS_COMMAND)
        self.create_service(Trigger, '~/reset', self._on_reset)
        self.diagnostics = common.Diagnostics(self)
        self.create_timer(1.0, self._publish_diagnostics)
        info = self._reset()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name='sim_step', daemon=True)
        self._thread.start()
        self.get_logger().info(f'sim: {p.control_rate_hz} Hz x real time {p.real_time_factor}, '
                               f'camera {p.camera_size} px '
                               f'{"on" if p.publish_camera else "off"}; episode {info}')

    # --- parameters and inputs -----------------------------------------------------------
    def _on_param(self, name, value):
        if name == 'control_rate_hz':
            self._pending_rate = value      # applied by the loop thread between steps
        elif name == 'seed':
            self._next_seed = value
        elif name == 'perturbation' and value:
            with self.lock:
                perturb.apply(self.sim, value, np.random.default_rng(self._next_seed))
        self.get_logger().info(f'{name} set to {value}')

    def _on_command(self, msg):
        self.counts['commands'] += 1
        q = np.asarray(msg.data, np.float64)
        if q.shape != (len(self.joint_names),):
            return self._drop('length', f'joint command dropped: {q.size} values, expected '
                              f'{len(self.joint_names)}; holding the last valid target')
        if not np.all(np.isfinite(q)):
            bad = [self.joint_names[i] for i in np.flatnonzero(~np.isfinite(q))[:3]]
            return self._drop('nan', f'joint command dropped: NaN/Inf for {bad}; holding the '
                              'last valid target')
        over = np.maximum(self.lower - q, q - self.upper)
        if over.max() > self.params.limit_tolerance_rad:
            i = int(np.argmax(over))
            return self._drop('range', f'joint command dropped: {self.joint_names[i]}='
                              f'{q[i]:.4f} is {over[i]:.4f} rad outside [{self.lower[i]:.4f}, '
                              f'{self.upper[i]:.4f}] (limit_tolerance_rad '
                              f'{self.params.limit_tolerance_rad}); holding the last target')
        if over.max() > 0:
            self.counts['clipped'] += 1
            i = int(np.argmax(over))
            self.throttle('warning', 'clip', f'joint command clipped to the limits: '
                          f'{self.joint_names[i]} {over[i]:.2e} rad outside')
            q = np.clip(q, self.lower, self.upper)
        self._command = q

    def _drop(self, key, text):
        self.counts['dropped'] += 1
        self.throttle('error', key, text)

    def _on_reset(self, request, response):
        try:
            response.message = json.dumps(self._reset())
            response.success = True
            self.get_logger().info(f'reset: {response.message}')
        except (ValueError, TypeError) as err:
            response.success, response.message = False, f'reset failed: {err}'
        return response

    def _reset(self):
        """New episode with the next seed and the current task; returns its description."""
        p = self.params
        task = task_spec(p.task_preset, p.task)
        with self.lock:
            seed = self._next_seed
            self.sim.reset(seed=seed, task=task)
            self._command = None
            self._next_seed, self._episode = seed + 1, self._episode + 1
            stamp = common.now_sec(self)
        return {'episode': self._episode, 'seed': seed, 'task_preset': p.task_preset,
                'task': p.task, 'instruction': task.instruction, 'stamp': stamp}

    # --- the stepping thread -------------------------------------------------------------
    def _period(self):
        rtf = self.params.real_time_factor
        return 0.0 if rtf <= 0 else 1.0 / (self.params.control_rate_hz * rtf)

    def _loop(self):
        clock = time.perf_counter
        deadline = clock()
        while not self._stop.is_set():
            try:
                self._step()
            except Exception as err:  # noqa: BLE001 - a failed step must not end the robot
                if self._stop.is_set() or not self.context.ok():
                    return  # shutting down: publishers are gone
                self.throttle('error', 'step', f'sim step failed: {err!r}')
            period = self._period()
            deadline += period
            behind = clock() - deadline
            if behind > max(period, 1e-9):  # re-anchor: no burst of catch-up steps
                if period > 0:
                    self.counts['missed_deadlines'] += int(behind // period)
                deadline = clock()
            while not self._stop.is_set() and self._pending_rate is None:
                remaining = deadline - clock()
                if remaining <= 0:
                    break
                time.sleep(min(remaining, MAX_SLEEP_S))
            if self._pending_rate is not None:
                deadline = clock()

    def _step(self):
        p = self.params
        start = time.perf_counter()
        with self.lock:
            if self._pending_rate is not None:
                rate, self._pending_rate = self._pending_rate, None
                self.sim.set_control_hz(rate)
            target = self._command if self._command is not None else self.sim.targets
            obs = self.sim.step(target)
            success = self.sim.held_success()
            progress = self.sim.progress()
            pos, quat = self.sim.cube_pose()
            stamp = self.get_clock().now().to_msg()
            stride = max(1, round(p.control_rate_hz / p.camera_rate_hz)) \
                if p.camera_rate_hz > 0 else 1
            render = p.publish_camera and self.counts['steps'] % stride == 0
            self.counts['steps'] += 1
            self.step_ms.add((time.perf_counter() - start) * 1e3)
            if render:
                start = time.perf_counter()
                image = self.sim.render()
                self.render_ms.add((time.perf_counter() - start) * 1e3)
        self._success = success
        self.pub_joints.publish(JointState(header=Header(stamp=stamp), name=self.joint_names,
                                           position=obs['joint_positions'].tolist(),
                                           velocity=obs['joint_velocities'].tolist()))
        self.pub_success.publish(Bool(data=success))
        self.pub_progress.publish(Float32(data=float(progress)))
        pose = PoseStamped(header=Header(stamp=stamp, frame_id='world'))
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = map(float, pos)
        o = pose.pose.orientation
        o.w, o.x, o.y, o.z = map(float, quat)
        self.pub_pose.publish(pose)
        if render:
            msg = common.rgb_to_image(image, 0.0, self.sim.camera_name)
            msg.header.stamp = stamp
            self.pub_image.publish(msg)
            self.counts['images'] += 1

    # --- health --------------------------------------------------------------------------
    def _publish_diagnostics(self):
        p = self.params
        now, steps = time.monotonic(), self.counts['steps']
        then, before = self._window
        self._window = (now, steps)
        achieved = (steps - before) / max(now - then, 1e-9)
        target = p.control_rate_hz * p.real_time_factor
        _, step_mean, step_max = self.step_ms.take()
        _, render_mean, render_max = self.render_ms.take()
        values = {'target_rate_hz': target if target > 0 else 'max',
                  'achieved_rate_hz': achieved, 'control_rate_hz': p.control_rate_hz,
                  'real_time_factor': p.real_time_factor, 'step_ms_mean': step_mean,
                  'step_ms_max': step_max, 'render_ms_mean': render_mean,
                  'render_ms_max': render_max, 'success': self._success,
                  'episode': self._episode, 'sim_time_s': float(self.sim.data.time),
                  'holding_start_pose': self._command is None}
        values.update(self.counts)
        slow = target > 0 and achieved < 0.9 * target
        message = (f'slow: {achieved:.1f} of {target:.1f} steps/s' if slow
                   else f'{achieved:.1f} steps/s')
        self.diagnostics.publish('warn' if slow else 'ok', message, values)

    def close(self):
        """Stop the stepping thread, then free the renderer (called by common.run_node)."""
        self._stop.set()
        self._thread.join(timeout=5.0)
        with self.lock:
            self.sim.close()


def main(args=None):
    return common.run_node(SimNode, args)


if __name__ == '__main__':
    sys.exit(main())
