"""Operator takeover for the controller: it yields its command stream to a teleop source.

    ros2 service call /controller/take_over std_srvs/srv/SetBool "{data: true}"   # operator
    ros2 service call /controller/take_over std_srvs/srv/SetBool "{data: false}"  # hand back

Only one source ever commands the joints: the controller. While yielded it computes no
chunks and forwards the newest target of /dial/teleop/joint_commands (Float64MultiArray in
its joint order) through its own SafetyFilter: position, velocity and step limits, hold when
the teleop input is older than ``teleop_timeout_s`` (or the joint state is stale), and the
e-stop still wins. The switch to teleop ramps from the last command (no jump, the stream
never paused); the hand-back ramps in from the measured pose like an e-stop release, on the
first chunk computed after it (old chunks are dropped). /dial/command_source (String,
latched) says who commands now: ``policy`` or ``teleop``; the recorder tags intervention
segments from it.

With ``surprise_takeover_s`` > 0 the controller also yields on its own when the surprise
monitor (/dial/surprise, nodes/surprise.py) has said ERROR for that long without a break
(measured on the intents' stamps): System-2's foresight keeps disagreeing with what the
camera sees, so the policy is likely off its training distribution. Without an operator
the stale-teleop rule holds the robot still; an operator's ~/take_over false hands back.
"""
import numpy as np
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import SetBool

from dial_ros.core.surprise import ErrorRun
from dial_ros.nodes import common
from dial_ros.topics import TOPIC_COMMAND_SOURCE, TOPIC_SURPRISE, TOPIC_TELEOP

POLICY, TELEOP = 'policy', 'teleop'


class TakeoverMixin:
    """The controller's takeover parts; call ``_init_takeover`` from ``__init__``."""

    def _init_takeover(self):
        self.command_source = POLICY
        self._teleop = None       # (receive time on the node clock, target vector)
        self._switches = 0
        self._source_pub = self.create_publisher(String, TOPIC_COMMAND_SOURCE,
                                                 common.QOS_LATCHED)
        self._source_pub.publish(String(data=self.command_source))
        self.create_subscription(Float64MultiArray, TOPIC_TELEOP, self._on_teleop,
                                 common.QOS_COMMAND)
        self.create_service(SetBool, '~/take_over', self._on_take_over)
        from dial_ros.msg import Surprise   # generated interfaces: imported once built
        self._surprise_errors = ErrorRun()   # surprise_takeover_s
        self.create_subscription(Surprise, TOPIC_SURPRISE, self._on_surprise, 10)

    @property
    def yielded(self):
        return self.command_source == TELEOP

    def _on_teleop(self, msg):
        names = getattr(self, 'joint_names', None)
        if names is None:
            return  # not configured: nothing to check it against, and nothing is sent
        target = np.asarray(msg.data, np.float64)
        if target.shape != (len(names),) or not np.all(np.isfinite(target)):
            return self._reject('teleop', f'{TOPIC_TELEOP}: expected {len(names)} finite '
                                f'targets in the controller\'s joint order, got shape '
                                f'{target.shape}' + ('' if target.size != len(names) else
                                                     ' with NaN/Inf'))
        self._teleop = (self._now(), target)

    def _on_surprise(self, msg):
        lasted = self._surprise_errors.update(common.stamp_to_sec(msg.header.stamp),
                                              msg.level == msg.ERROR)
        hold_s = self.params.surprise_takeover_s
        if hold_s > 0 and lasted >= hold_s and not self.yielded and self.safety is not None:
            self.get_logger().warning(f'surprise ERROR for {lasted:.2f} s (surprise '
                                      f'{msg.surprise:.2f}, relative_mse '
                                      f'{msg.relative_mse:.2f}): yielding to the operator')
            self._switch_source(TELEOP)

    def _on_take_over(self, request, response):
        source = TELEOP if request.data else POLICY
        response.success = True
        response.message = self._switch_source(source)
        return response

    def _switch_source(self, source):
        """Hand the command stream to ``source``; returns what happened (for the caller)."""
        with self._safety_lock:
            if source == self.command_source:
                return f'already {source}'
            self.command_source = source
            self._switches += 1
            if self.safety is not None:
                # teleop: ramp from the last command; hand-back: from the measured pose
                self.safety.resume(from_measured=source == POLICY)
                self.scheduler.reset()   # never resume a chunk from before the switch
            self._chunk_key, self._running = None, None
            self._teleop = None   # a target from before the switch is not an operator's now
        self._source_pub.publish(String(data=source))
        text = ('yielded to the teleop source on ' + TOPIC_TELEOP if source == TELEOP else
                'handed back to the policy: ramping in from the measured pose')
        if source == TELEOP:
            self.get_logger().warning(text)
        else:
            self.get_logger().info(text)
        return text

    def _teleop_target(self, now, joint):
        """(target or None, reason) of a command tick while yielded."""
        if joint is None or now - joint.stamp > self.params.joint_state_timeout_s:
            return None, 'joint_state stale or missing (teleop)'
        if self._teleop is None:
            return None, 'no teleop command yet'
        age = now - self._teleop[0]
        if age > self.params.teleop_timeout_s:
            return None, (f'teleop stale ({age:.2f} s old, timeout '
                          f'{self.params.teleop_timeout_s:.2f} s)')
        return self._teleop[1], ''

    def _takeover_diagnostics(self, values, now):
        values['command_source'] = self.command_source
        values['command_source_switches'] = self._switches
        values['age_teleop_s'] = (float('nan') if self._teleop is None
                                  else now - self._teleop[0])
