"""Surprise monitor: each latent intent checked against the frame it foresaw; free OOD alarm.

Subscribes: /dial/latent_intent and /dial/observation_latent (dial_ros/LatentTensor).
Publishes: /dial/surprise (dial_ros/Surprise), one message per intent whose target frame
(the intent's stamp + ``horizon`` x ``step_period_s``, matched within
``match_tolerance_s``) arrived, stamped with the intent's stamp; and /diagnostics (1 Hz):
WARN / ERROR when the largest surprise of the last period reached ``warn_threshold`` /
``error_threshold``, and ERROR when ``relative_mse`` (the foresight error against the seen
tokens' variance) reached ``relative_mse_error`` (0 = off): a sudden change of the whole
view leaves surprise near 1 for a horizon but shows there at once. The thresholds change
live (rqt, ``ros2 param set``); 0 < warn < error is enforced with a reason. Scoring and
matching: :mod:`dial_ros.core.surprise`.
"""
import dataclasses
import sys

from rclpy.node import Node

from dial_ros.core.surprise import LEVELS, SurpriseMonitor, check_thresholds
from dial_ros.msg import LatentTensor, Surprise
from dial_ros.nodes import common
from dial_ros.schema import setting
from dial_ros.topics import TOPIC_SURPRISE

JUMP_BACK_S = 1.0  # an observation this far behind the newest: a new clock, start over
THROTTLE_S = 2.0


@dataclasses.dataclass
class Params:
    """Parameters of the surprise node (ROS parameters; see common.declare_params)."""

    warn_threshold: float = setting(2.5, 'surprise (foresight error / copy-current-frame '
                                    'error) from which diagnostics say WARN (live)',
                                    low=0.01, high=1000.0)
    error_threshold: float = setting(5.0, 'surprise from which diagnostics say ERROR (live); '
                                     'must be above warn_threshold', low=0.01, high=1000.0)
    relative_mse_error: float = setting(0.5, 'foresight error / variance of the seen tokens '
                                        'from which diagnostics say ERROR (live); 0 = off',
                                        low=0.0, high=1000.0)
    step_period_s: float = setting(0.05, "the model's control step: an intent of horizon H "
                                   'foresees the frame H steps after its stamp', low=0.001,
                                   high=10.0, unit='s')
    match_tolerance_s: float = setting(0.025, 'how far a frame stamp may lie from the '
                                       'foreseen one and still be compared; below '
                                       'step_period_s', low=0.0, high=10.0, unit='s')
    floor_fraction: float = setting(0.05, 'floor of the copy error, as a share of the seen '
                                    "tokens' variance: keeps a still scene from dividing by "
                                    '~0', low=0.0, high=10.0)

    def check(self):
        """Cross-field rules: ValueError naming the setting."""
        check_thresholds(self.warn_threshold, self.error_threshold)
        if self.match_tolerance_s >= self.step_period_s:
            raise ValueError(f'match_tolerance_s ({self.match_tolerance_s}) must be below '
                             f'step_period_s ({self.step_period_s})')


class SurpriseNode(Node):
    """See the module docstring."""

    def __init__(self, **kwargs):
        super().__init__('surprise', **kwargs)
        self.params = common.declare_params(self, Params(), on_change=self._on_param)
        self._make_monitor()
        self.pub = self.create_publisher(Surprise, TOPIC_SURPRISE, 10)
        self.create_subscription(LatentTensor, common.TOPIC_OBSERVATION, self._on_observation,
                                 common.QOS_LATENT)
        self.create_subscription(LatentTensor, common.TOPIC_INTENT, self._on_intent,
                                 common.QOS_LATENT)
        self.throttle = common.Throttle(self.get_logger(), THROTTLE_S)
        self.counts = {'observations': 0, 'intents': 0, 'revoked': 0, 'bad_tensor': 0,
                       'clock_resets': 0}
        self.newest = None
        self.window, self.relative = common.WindowStats(), common.WindowStats()
        self.last = None
        self.diagnostics = common.Diagnostics(self)
        self.create_timer(1.0, self._publish_diagnostics)

    def _make_monitor(self):
        p = self.params
        self.monitor = SurpriseMonitor(p.step_period_s, p.match_tolerance_s,
                                       floor_fraction=p.floor_fraction,
                                       warn=p.warn_threshold, error=p.error_threshold,
                                       relative_error=p.relative_mse_error)

    def _on_param(self, name, value):
        p = self.params
        if name in ('warn_threshold', 'error_threshold', 'relative_mse_error'):
            self.monitor.set_thresholds(p.warn_threshold, p.error_threshold,
                                        p.relative_mse_error)
        else:  # the matching changed: pending intents were queued under the old rule
            self._make_monitor()
        self.get_logger().info(f'{name} set to {value!r}')

    # --- inputs --------------------------------------------------------------------------
    def _read(self, msg, what):
        try:
            return common.read_latent(msg)
        except ValueError as err:
            self.counts['bad_tensor'] += 1
            self.throttle('error', (what, str(err)), f'{what}: {err}; dropped')
            return None

    def _on_observation(self, msg):
        tokens = self._read(msg, 'observation')
        if tokens is None:
            return
        self.counts['observations'] += 1
        stamp = common.stamp_to_sec(msg.header.stamp)
        if self.newest is not None and stamp < self.newest - JUMP_BACK_S:
            self.counts['clock_resets'] += 1
            self.get_logger().info(f'observation stamps jumped back {self.newest - stamp:.3f} '
                                   's (a new clock): pending intents dropped')
            self.monitor.reset()
            self.newest = stamp
        self.newest = stamp if self.newest is None else max(self.newest, stamp)
        self._publish(self.monitor.add_observation(stamp, tokens), msg.header.frame_id)

    def _on_intent(self, msg):
        if not msg.valid:
            self.counts['revoked'] += 1
            return
        foresight = self._read(msg, 'intent')
        if foresight is None:
            return
        self.counts['intents'] += 1
        stamp = common.stamp_to_sec(msg.header.stamp)
        try:
            results = self.monitor.add_intent(stamp, foresight, msg.horizon)
        except ValueError as err:
            self.counts['bad_tensor'] += 1
            self.throttle('error', ('intent', str(err)), f'intent: {err}; dropped')
            return
        self._publish(results, msg.header.frame_id)

    # --- outputs -------------------------------------------------------------------------
    def _publish(self, results, frame_id):
        if self.monitor.last_error:
            error, self.monitor.last_error = self.monitor.last_error, ''
            self.throttle('error', 'not_compared', f'{error}; dropped')
        for r in results:
            msg = Surprise(surprise=r.surprise, cosine=r.cosine, mse=r.mse,
                           copy_mse=r.copy_mse, relative_mse=r.relative_mse,
                           level=LEVELS.index(r.level),
                           horizon=int(round((r.target_stamp - r.stamp)
                                             / self.params.step_period_s)))
            common.sec_to_stamp(r.stamp, msg.header.stamp)
            common.sec_to_stamp(r.target_stamp, msg.target_stamp)
            msg.header.frame_id = frame_id
            self.pub.publish(msg)
            self.window.add(r.surprise)
            self.relative.add(r.relative_mse)
            self.last = r

    def _publish_diagnostics(self):
        p = self.params
        count, mean, peak = self.window.take()
        relative = self.relative.take()[2]
        values = {'scored_last_period': count, 'surprise_mean': mean, 'surprise_max': peak,
                  'relative_mse_max': relative, 'warn_threshold': p.warn_threshold,
                  'error_threshold': p.error_threshold,
                  'relative_mse_error': p.relative_mse_error}
        if self.last is not None:
            values.update(surprise_last=self.last.surprise, cosine_last=self.last.cosine)
        values.update(self.counts)
        values.update(self.monitor.counts)
        if count == 0:
            level, message = 'ok', 'no intent scored in the last period'
        elif peak >= p.error_threshold:
            level, message = 'error', f'surprise {peak:.3g} >= error_threshold ' \
                f'{p.error_threshold:g}: the scene is not what System-2 foresaw'
        elif 0 < p.relative_mse_error <= relative:
            level, message = 'error', f'relative_mse {relative:.3g} >= relative_mse_error ' \
                f'{p.relative_mse_error:g}: the view changed unforeseen'
        elif peak >= p.warn_threshold:
            level, message = 'warn', f'surprise {peak:.3g} >= warn_threshold ' \
                f'{p.warn_threshold:g}'
        else:
            level, message = 'ok', f'surprise max {peak:.3g}'
        self.diagnostics.publish(level, message, values)


def main(args=None):
    return common.run_node(SurpriseNode, args)


if __name__ == '__main__':
    sys.exit(main())
