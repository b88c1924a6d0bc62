"""The scripted Lift expert as a teleoperation source: it drives the robot like an operator.

    python -m dial_ros.nodes.expert --ros-args -p episodes:=10 -p noise_std:=0.03

Output is what a teleoperator sends: 32 joint position targets (std_msgs/Float64MultiArray
on /dial/joint_commands, GR1Sim.joint_names order), one per /joint_states message (in step
with the sim). The plan comes from dial_ros.sim.expert.ScriptedExpert on a kinematic model
of the robot (a GR1Sim built in this process, render off, never stepped: only its MjModel
for inverse kinematics and its limits). What the node reads:
  /joint_states          the measured joints (by name): the start pose, and, closed loop
                         (``closed_loop``, default), the IK start at every step
  /sim/object_pose       the cube pose (privileged sim state, the stand-in for the
                         operator's eyes): stamped at or after the episode start, then
                         followed every step while reaching (closed loop)
and /sim/task_success (std_msgs/Bool, the lift held 1 s) to judge the outcome.

DART (``noise_std`` > 0): the robot executes the expert's target plus temporally
correlated noise (``sim.expert.CommandNoise``) and the clean target goes out on
/expert/action_label (sensor_msgs/JointState stamped with the joint state it answers,
always published) so that a recording keeps it as the action; the closed-loop expert
corrects what the noise did.

Episode flow (``autoreset`` true): call the sim's ~/reset (std_srvs/Trigger; its JSON reply
gives the seed and the reset stamp) -> wait for a post-reset joint state and cube pose ->
plan and stream targets -> when the plan is done and success is seen, or the plan is done
and ``settle_s`` passes without success, or ``episode_timeout_s`` passes: stop sending (the
sim holds the last target) and start the next episode, until ``episodes`` are done
(0 = forever); then idle (raising ``episodes`` live continues).
With ``autoreset`` false the sim is never reset: each episode starts from the current state.
Publishes /expert/episode (std_msgs/String, JSON) events for a recorder:
  {"event": "start", "episode", "seed", "task_preset", "stamp"}
  {"event": "stop", "episode", "seed", "outcome": success|failure|timeout|aborted,
   "steps", "duration_s", "retries", "stamp"}
Takeover (DAgger through ROS): with ``teleop`` the targets go to /dial/teleop/joint_commands,
which the controller forwards while it is yielded to them (its ~/take_over service); with
``take_over`` each episode starts from the measured state (``ScriptedExpert.take_over`` picks
the phase from where the robot is) instead of the reset pose, and with a takeover delay the
policy drives for U(takeover_delay_min_s, takeover_delay_max_s) s after the reset first: then
the expert calls ``takeover_service`` (true) and takes over, and at the episode's end hands
back (false). An episode the policy finishes first ends with outcome success and no takeover.
The policy's part of each episode starts as in the evaluation (evaluate/episodes.py): before
the reset the expert deactivates ``controller_node`` (lifecycle; it stops commanding, the sim
holds the reset pose), and ``policy_settle_s`` after the post-reset state it activates it
again: a fresh start that ramps in from the measured reset pose. A controller left running
through the reset would step from its last command, the previous episode's final pose, and
drag the robot back towards it.
The plan's phases are counted in 20 Hz steps (dial_ros.sim.expert); at another ``rate_hz``
(the rate of /joint_states, i.e. the sim's control rate) they are rescaled so that a motion
takes the same time. A new rate applies from the next episode.
"""
import dataclasses
import json
import sys
import time

import numpy as np
from geometry_msgs.msg import PoseStamped
from lifecycle_msgs.srv import ChangeState
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray, Header, String
from std_srvs.srv import SetBool, Trigger

import dial_ros.sim  # noqa: F401 - chooses the headless GL backend before mujoco is imported
from dial_ros.nodes import common
from dial_ros.nodes.lifecycle import change_state_request
from dial_ros.schema import setting
from dial_ros.sim.expert import CommandNoise, ScriptedExpert
from dial_ros.sim.gr1_env import GR1Sim
from dial_ros.topics import TOPIC_EXPERT_EPISODE as TOPIC_EPISODE
# the clean target, stamped with the joint state it answers (DART: the command carries noise)
from dial_ros.topics import TOPIC_EXPERT_LABEL as TOPIC_LABEL
from dial_ros.topics import TOPIC_TELEOP

PLAN_HZ = 20.0             # ScriptedExpert.PHASES are counted in steps of this rate
RESET_TIMEOUT_S = 10.0
QOS_EVENTS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                        history=HistoryPolicy.KEEP_LAST)


@dataclasses.dataclass
class Params:
    """Parameters of the expert node."""

    rate_hz: int = setting(20, 'rate of /joint_states (the sim control rate): one target per '
                           'joint state; phase lengths are scaled to it (from the next '
                           'episode)', low=1, high=200, unit='Hz')
    closed_loop: bool = setting(True, 're-plan every step from the measured joints and the cube '
                                'pose (false: the first, open-loop expert; next episode)')
    align_yaw: bool = setting(False, "turn the hand to square up with the cube's yaw (off: one "
                              'hand orientation, the grasp the policy can learn from the '
                              'tiny ViT; next episode)')
    noise_std: float = setting(0.0, 'DART: std of the noise added to the executed command of '
                               'the waist and right arm (the clean target goes to '
                               '/expert/action_label); 0 = none; next episode', low=0.0,
                               high=0.5, unit='rad')
    noise_time_s: float = setting(0.3, 'DART: correlation time of the noise', low=0.01,
                                  high=10.0, unit='s')
    noise_grasp_scale: float = setting(0.3, 'DART: noise scale while grasping and lifting',
                                       low=0.0, high=1.0)
    noise_random: bool = setting(False, 'DART: each episode draws its noise level uniformly in '
                                 '[0, noise_std] (clean and perturbed demonstrations)')
    episodes: int = setting(0, 'episodes to run, 0 = forever', low=0, high=1_000_000)
    episode_timeout_s: float = setting(30.0, 'end an episode without success after this',
                                       low=1.0, high=3600.0, unit='s')
    settle_s: float = setting(1.0, 'after the plan ends, wait this long for success',
                              low=0.0, high=60.0, unit='s')
    autoreset: bool = setting(True, "call the sim's reset service before each episode")
    paused: bool = setting(False, 'stay idle before the next episode until set false (live; '
                           'lets an evaluation subscribe before the first episode starts)')
    reset_service: str = setting('/sim/reset', 'std_srvs/Trigger that starts an episode',
                                 read_only=True)
    teleop: bool = setting(False, 'publish the targets on /dial/teleop/joint_commands (the '
                           'controller forwards them while yielded, ~/take_over) instead of '
                           '/dial/joint_commands (read at start-up)', read_only=True)
    take_over: bool = setting(False, 'start each episode from the measured state (the phase '
                              'from where the robot is) instead of the reset pose; with '
                              'autoreset false: take over without resetting')
    takeover_delay_min_s: float = setting(0.0, 'take_over: the policy drives at least this '
                                          'long after the reset before the expert takes over',
                                          low=0.0, high=600.0, unit='s')
    takeover_delay_max_s: float = setting(0.0, 'take_over: ... and at most this long (uniform '
                                          'in [min, max], seeded by the episode seed)',
                                          low=0.0, high=600.0, unit='s')
    takeover_service: str = setting('/controller/take_over', "std_srvs/SetBool called true at "
                                    "the takeover and false at the episode's end (teleop and "
                                    "take_over only; '' = none)", read_only=True)
    controller_node: str = setting('/controller', 'take_over with autoreset: the lifecycle '
                                   'controller deactivated before each reset and activated '
                                   'policy_settle_s after it, so the policy starts each '
                                   "episode fresh from the reset pose ('' = never touched)",
                                   read_only=True)
    policy_settle_s: float = setting(1.0, 'take_over: seconds between the post-reset state and '
                                     "the controller's activation (perception and intent see "
                                     'the new scene, as in the evaluation)', low=0.0,
                                     high=60.0, unit='s')

    def check(self):
        """Cross-field rules (ValueError naming the field)."""
        if self.takeover_delay_max_s < self.takeover_delay_min_s:
            raise ValueError(f'takeover_delay_max_s: {self.takeover_delay_max_s} is below '
                             f'takeover_delay_min_s ({self.takeover_delay_min_s})')


class KinematicModel:
    """What ScriptedExpert reads from a sim, with the cube pose fed from ROS messages."""

    def __init__(self):
        sim = GR1Sim(render=False)
        self.model = sim.model
        self.joint_names = sim.joint_names
        self.joint_limits = sim.joint_limits
        self.velocity_limits = sim.velocity_limits
        self.control_dt = 1.0 / PLAN_HZ
        self.pose = None
        self.cube_rest_z = getattr(sim, 'cube_rest_z', 0.0)   # set from each reset's pose

    def cube_pose(self):
        """The cube pose the episode was planned from: (position (3,), quaternion wxyz)."""
        return self.pose


def make_expert(kinematics, rate_hz, closed_loop=True, align_yaw=False):
    """A ScriptedExpert whose phase lengths and velocity clamps fit ``rate_hz`` ticks."""
    kinematics.control_dt = 1.0 / rate_hz
    expert = ScriptedExpert(kinematics, closed_loop=closed_loop, align_yaw=align_yaw)
    scale = rate_hz / PLAN_HZ
    for name in ('PHASES', 'RETRY_PHASES'):
        setattr(expert, name, tuple((phase, max(1, round(steps * scale)))
                                    for phase, steps in getattr(ScriptedExpert, name)))
    return expert


class ExpertNode(Node):
    """State machine on a timer: idle -> resetting -> waiting -> running -> idle ..."""

    def __init__(self, **kwargs):
        super().__init__('expert', **kwargs)
        self.params = common.declare_params(self, Params(), on_change=self._on_param)
        self.kinematics = KinematicModel()
        self.joint_order = common.JointOrder(self.kinematics.joint_names)
        self.throttle = common.Throttle(self.get_logger(), 2.0)
        self.state, self.episode, self.outcomes = 'idle', 0, {}
        self.expert = self._future = self._started = self._done_at = None
        self._steps, self._since, self._seed, self._task, self._begin = 0, 0.0, None, None, 0.0
        self._joints = self._pose = None       # (stamp s, value) of the newest message
        self._success = (0.0, False)
        # teleop: the controller forwards the targets; never a second publisher of commands
        self.pub_command = self.create_publisher(
            Float64MultiArray, TOPIC_TELEOP if self.params.teleop else common.TOPIC_COMMAND,
            common.QOS_COMMAND)
        self.pub_label = self.create_publisher(JointState, TOPIC_LABEL, common.QOS_COMMAND)
        self.takeover_client = (self.create_client(SetBool, self.params.takeover_service)
                                if self.params.takeover_service else None)
        self._took_over, self._takeover_at = False, None
        self.lifecycle_client = (
            self.create_client(ChangeState, self.params.controller_node.rstrip('/')
                               + '/change_state')
            if self.params.take_over and self.params.autoreset and self.params.controller_node
            else None)
        self._activate_at = None
        self.label_names = list(self.kinematics.joint_names)
        self.noise = None
        self.pub_event = self.create_publisher(String, TOPIC_EPISODE, QOS_EVENTS)
        self.create_subscription(JointState, common.TOPIC_JOINT_STATES, self._on_joints,
                                 common.QOS_SENSOR)
        self.create_subscription(PoseStamped, common.TOPIC_OBJECT_POSE, self._on_pose, 10)
        self.create_subscription(Bool, common.TOPIC_SUCCESS, self._on_success, 10)
        self.reset_client = self.create_client(Trigger, self.params.reset_service)
        self.timer = self.create_timer(1.0 / self.params.rate_hz, self._tick)
        self.diagnostics = common.Diagnostics(self)
        self.create_timer(1.0, self._publish_diagnostics)
        self.get_logger().info(f'expert: {self.params.rate_hz} Hz, episodes '
                               f'{self.params.episodes or "forever"}, autoreset '
                               f'{self.params.autoreset}')

    def _on_param(self, name, value):
        self.get_logger().info(f'{name} set to {value}' + (' (from the next episode)'
                                                           if name == 'rate_hz' else ''))

    # --- inputs --------------------------------------------------------------------------
    def _on_joints(self, msg):
        try:
            self._joints = (common.stamp_to_sec(msg.header.stamp),
                            self.joint_order.positions(msg))
        except ValueError as err:
            self.throttle('error', 'joints', f'joint state ignored: {err}')
            return
        if self.state == 'running':
            self._act(self._joints[1], msg.header.stamp)

    def _on_pose(self, msg):
        p, o = msg.pose.position, msg.pose.orientation
        self._pose = (common.stamp_to_sec(msg.header.stamp),
                      (np.array([p.x, p.y, p.z]), np.array([o.w, o.x, o.y, o.z])))
        if self.state == 'running':   # closed loop: the plan follows the cube
            self.kinematics.pose = self._pose[1]

    def _on_success(self, msg):
        self._success = (common.now_sec(self), bool(msg.data))

    # --- the episode state machine -------------------------------------------------------
    def _tick(self):
        getattr(self, '_' + self.state)()

    def _idle(self):
        p = self.params
        if p.paused:
            return
        if p.episodes and self.episode >= p.episodes:
            self.state = 'finished'
            self.get_logger().info(f'expert: {self.episode} episodes done: {self.outcomes}')
            return
        if not p.autoreset:
            self._seed, self._since, self.state = None, common.now_sec(self), 'waiting'
        elif self.lifecycle_client is not None:   # the controller sends nothing over the reset
            if self._change_controller('deactivate'):
                self.state = 'pausing'
        else:
            self._reset()

    def _pausing(self):
        if self._lifecycle_done('deactivate'):
            self._reset()

    def _reset(self):
        p = self.params
        if self.reset_client.service_is_ready():
            self._future = self.reset_client.call_async(Trigger.Request())
            self._started = time.monotonic()
            self.state = 'resetting'
        else:
            self.throttle('info', 'wait', f'expert: waiting for {p.reset_service}')

    def _resetting(self):
        if not self._future.done():
            if time.monotonic() - self._started > RESET_TIMEOUT_S:
                self.get_logger().warning('expert: reset did not answer; retrying')
                self.state = 'idle'
            return
        reply = self._future.result()
        if reply is None or not reply.success:
            self.throttle('error', 'reset', f'expert: reset failed: '
                          f'{getattr(reply, "message", "no reply")}; retrying')
            self.state = 'idle'
            return
        try:
            info = json.loads(reply.message)
        except (TypeError, ValueError):   # a reset service that is not dial_ros's sim
            info = {'stamp': common.now_sec(self)}
        self._seed, self._task = info.get('seed'), info.get('task_preset')
        self._since = float(info.get('stamp', 0.0))
        self.state = 'waiting'

    def _waiting(self):
        joints, pose = self._joints, self._pose
        if joints is None or pose is None or min(joints[0], pose[0]) < self._since:
            return
        self.kinematics.pose = pose[1]
        p = self.params
        if p.autoreset:   # the cube rests on the table right after a reset
            self.kinematics.cube_rest_z = float(pose[1][0][2])
        self.expert = make_expert(self.kinematics, p.rate_hz, p.closed_loop, p.align_yaw)
        self.noise = CommandNoise(self.kinematics, p.noise_std, p.noise_time_s,
                                  p.noise_grasp_scale, seed=self._seed,
                                  random_std=p.noise_random) if p.noise_std else None
        if self.timer.timer_period_ns != int(1e9 / p.rate_hz):
            self.timer.timer_period_ns = int(1e9 / p.rate_hz)
        self._started, self._steps, self._done_at = time.monotonic(), 0, None
        self._begin = common.now_sec(self)
        self._took_over, self._takeover_at = False, None
        self._event('start', task_preset=self._task)
        if not p.take_over:
            self.expert.reset({'joint_positions': joints[1]})
            self.state = 'running'
            return
        if self.lifecycle_client is None:
            return self._policy_starts()
        self._activate_at = time.monotonic() + p.policy_settle_s
        self.state = 'settling'

    def _settling(self):
        if time.monotonic() >= self._activate_at and self._change_controller('activate'):
            self.state = 'activating'

    def _activating(self):
        if self._lifecycle_done('activate'):
            self._policy_starts()

    def _policy_starts(self):
        p = self.params
        rng = np.random.default_rng(self._seed)
        delay = rng.uniform(p.takeover_delay_min_s, p.takeover_delay_max_s)
        self._takeover_at = time.monotonic() + delay
        self.state = 'policy'   # the policy drives until the takeover

    def _change_controller(self, transition):
        """Ask ``controller_node`` for a lifecycle transition; False while it is not up."""
        if not self.lifecycle_client.service_is_ready():
            self.throttle('warning', 'lifecycle', f'expert: waiting for '
                          f'{self.lifecycle_client.srv_name}')
            return False
        self._future = self.lifecycle_client.call_async(change_state_request(transition))
        self._started = time.monotonic()
        return True

    def _lifecycle_done(self, transition):
        """True once the transition answered (or timed out: logged, the episode goes on)."""
        if not self._future.done():
            if time.monotonic() - self._started <= RESET_TIMEOUT_S:
                return False
            self.get_logger().warning(f'expert: controller {transition} did not answer in '
                                      f'{RESET_TIMEOUT_S:.0f} s; going on')
            return True
        reply = self._future.result()
        if reply is None or not reply.success:   # e.g. already inactive: nothing to undo
            self.get_logger().warning(f'expert: controller {transition} refused (see its '
                                      'log); going on')
        return True

    def _policy(self):
        _, success = self._success
        if success and self._success[0] >= self._begin:
            return self._finish('success')   # the policy finished first: no takeover
        if time.monotonic() < self._takeover_at:
            return
        if self.params.teleop and self.takeover_client is not None:
            if not self.takeover_client.service_is_ready():
                self.throttle('warning', 'takeover', f'expert: waiting for '
                              f'{self.params.takeover_service}')
                return
            self._future = self.takeover_client.call_async(SetBool.Request(data=True))
        else:
            self._future = None
        self.state = 'taking_over'

    def _taking_over(self):
        if self._future is not None and not self._future.done():
            return
        joints = self._joints[1]
        self.kinematics.pose = self._pose[1]
        self.expert.take_over({'joint_positions': joints})
        self._took_over = True
        self._started = time.monotonic()   # the expert's own episode_timeout_s
        self.get_logger().info(f'expert: took over in phase {self.expert.phase}')
        self.state = 'running'

    def _act(self, joints, stamp):
        """One target per joint state: the label, and the command the robot executes.

        The label carries the stamp of the joint state it answers (the sim stamps a step's
        joint state and camera frame alike), so a converter pairs frame and label exactly.
        """
        label = self.expert.act({'joint_positions': joints})
        command = label if self.noise is None else self.noise(label, self.expert.phase)
        self.pub_label.publish(JointState(header=Header(stamp=stamp), name=self.label_names,
                                          position=label.tolist()))
        self.pub_command.publish(Float64MultiArray(data=command.tolist()))
        self._steps += 1

    def _running(self):
        now = time.monotonic()
        stamp, success = self._success
        success = success and stamp >= self._begin
        if self.expert.done and self._done_at is None:
            self._done_at = now
        outcome = None
        if self.expert.done and success:
            outcome = 'success'
        elif self._done_at is not None and now - self._done_at >= self.params.settle_s:
            outcome = 'failure'
        elif now - self._started > self.params.episode_timeout_s:
            outcome = 'timeout'
        if outcome:
            self._finish(outcome)

    def _finished(self):
        if not self.params.episodes or self.episode < self.params.episodes:
            self.state = 'idle'  # `episodes` was raised

    def _finish(self, outcome):
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        if self._took_over and self.params.teleop and self.takeover_client is not None:
            self.takeover_client.call_async(SetBool.Request(data=False))   # hand back
        self._event('stop', outcome=outcome, steps=self._steps,
                    duration_s=round(time.monotonic() - self._started, 3),
                    retries=self.expert.retries, took_over=self._took_over)
        self.get_logger().info(f'expert: episode {self.episode} (seed {self._seed}): '
                               f'{outcome} after {self._steps} steps')
        self.episode += 1
        self.state = 'idle'   # the sim holds the last target until the next reset

    def _event(self, event, **fields):
        data = {'event': event, 'episode': self.episode, 'seed': self._seed, **fields,
                'stamp': common.now_sec(self)}
        self.pub_event.publish(String(data=json.dumps(data)))

    # --- health and shutdown -------------------------------------------------------------
    def _publish_diagnostics(self):
        values = {'state': self.state, 'episode': self.episode, 'seed': self._seed,
                  'phase': getattr(self.expert, 'phase', 'none'), 'rate_hz': self.params.rate_hz}
        values.update({f'outcome_{k}': v for k, v in sorted(self.outcomes.items())})
        self.diagnostics.publish('ok', f'{self.state}, episode {self.episode}', values)

    def close(self):
        """Report an episode cut short (called by common.run_node before destroy_node)."""
        if self.state in ('running', 'policy', 'taking_over', 'settling', 'activating'):
            try:
                self._event('stop', outcome='aborted', steps=self._steps,
                            duration_s=round(time.monotonic() - self._started, 3))
            except Exception:  # noqa: BLE001 - the context may already be shut down
                pass


def main(args=None):
    return common.run_node(ExpertNode, args)


if __name__ == '__main__':
    sys.exit(main())
