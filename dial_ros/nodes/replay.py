"""Replay a recorded episode's joint commands through the safety layer (the "replay policy").

    python -m dial_ros.nodes.replay --ros-args -p bag:=/path/to/episode

Tests the pipeline without a model: the recorded ``/dial/joint_commands`` are streamed with
their original timing (scaled by ``rate_factor``) to the robot or the sim, each one through
the same SafetyFilter the controller uses: joint and velocity limits, a max step per tick, a
ramp from the measured pose into the first command, hold on stale joint states, e-stop.
At the end it holds the last command (or loops).
"""
import dataclasses
import sys

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray

from dial_ros.core.safety import SafetyFilter, SafetyLimits
from dial_ros.data.bag import Topics, read_episode
from dial_ros.embodiment import load_embodiment
from dial_ros.nodes import common
from dial_ros.schema import setting


@dataclasses.dataclass
class Params:
    bag: str = setting('', 'rosbag2 episode directory to replay (read at start-up)',
                       read_only=True)
    embodiment: str = setting('gr1_sim', 'embodiment config name', read_only=True)
    rate_factor: float = setting(1.0, 'playback speed (1 = original timing)', low=0.05,
                                 high=10.0)
    loop: bool = setting(False, 'start over at the end instead of holding')
    control_rate_hz: int = setting(100, 'command stream rate', low=1, high=1000, unit='Hz')
    velocity_scale: float = setting(0.5, 'fraction of the embodiment velocity limits',
                                    low=0.01, high=1.0)
    max_step_rad: float = setting(0.02, 'max change of any joint per tick', low=0.0001,
                                  high=1.0, unit='rad')
    ramp_time_s: float = setting(1.0, 'ramp from the measured pose into the first command',
                                 low=0.0, high=10.0, unit='s')
    joint_state_timeout_s: float = setting(0.3, 'hold when /joint_states is older',
                                           low=0.01, high=10.0, unit='s')


class ReplayNode(Node):
    """Streams recorded commands through the safety filter."""

    def __init__(self):
        super().__init__('replay')
        self.params = common.declare_params(self, Params(), self._on_change)
        p = self.params
        if not p.bag:
            raise SystemExit('replay: parameter bag is required (an episode directory)')
        spec = load_embodiment(p.embodiment)
        episode = read_episode(p.bag, Topics())
        if not episode.commands:
            raise SystemExit(f'replay: {episode.name} has no {Topics.commands} messages')
        self.commands = np.array([np.asarray(c, np.float64) for c in episode.commands])
        if self.commands.shape[1] != spec.num_joints:
            raise SystemExit(f'replay: {episode.name} commands have '
                             f'{self.commands.shape[1]} joints, {p.embodiment} has '
                             f'{spec.num_joints}')
        self.times = episode.command_times - episode.command_times[0]
        self.order = common.JointOrder(spec.joint_names)
        limits = SafetyLimits(spec.position_lower, spec.position_upper,
                              spec.velocity_limit * p.velocity_scale, p.max_step_rad)
        self.safety = SafetyFilter(limits, ramp_time_s=p.ramp_time_s,
                                   stale_timeout_s=p.joint_state_timeout_s,
                                   nominal_period_s=1.0 / p.control_rate_hz)
        self.measured = None
        self.measured_at = None
        self.start = None
        self.throttle = common.Throttle(self.get_logger())
        self.pub = self.create_publisher(Float64MultiArray, common.TOPIC_COMMAND,
                                         common.QOS_COMMAND)
        self.create_subscription(JointState, common.TOPIC_JOINT_STATES,
                                 self._on_joints, common.QOS_SENSOR)
        self.create_subscription(Bool, common.TOPIC_ESTOP, self._on_estop, 10)
        self.timer = self.create_timer(1.0 / p.control_rate_hz, self._tick)
        self.get_logger().info(f'replaying {len(self.commands)} commands '
                               f'({self.times[-1]:.1f} s) from {episode.name}')

    def _on_change(self, name, value):
        if name == 'control_rate_hz':
            self.timer.cancel()
            self.timer = self.create_timer(1.0 / value, self._tick)

    def _on_joints(self, msg):
        try:
            self.measured = self.order.positions(msg)
            self.measured_at = common.now_sec(self)
        except ValueError as err:
            self.throttle('error', 'joints', str(err))

    def _on_estop(self, msg):
        self.safety.estop('topic') if msg.data else self.safety.release()

    def _tick(self):
        if self.measured is None:
            return
        now = common.now_sec(self)
        if self.start is None:
            self.start = now
        elapsed = (now - self.start) * self.params.rate_factor
        if self.params.loop and elapsed > self.times[-1]:
            self.start, elapsed = now, 0.0
        index = max(0, int(np.searchsorted(self.times, elapsed, side='right')) - 1)
        command, status = self.safety.filter(self.commands[index], self.measured, now,
                                             now - self.measured_at)
        if command is not None and status.send:
            self.pub.publish(Float64MultiArray(data=command.tolist()))


def main(args=None):
    return common.run_node(ReplayNode, args)


if __name__ == '__main__':
    sys.exit(main())
