"""Intent: System-2 as a lifecycle node, observation latent + instruction -> latent intent.

Subscribes: /dial/observation_latent (dial_ros/LatentTensor, from perception) and
/dial/instruction (std_msgs/String, reliable + transient local: latched).
Publishes: /dial/latent_intent (dial_ros/LatentTensor) at ``intent_rate_hz``, stamped with
the observation it was computed from (not the publish time), horizon = the model's
foresight horizon, ``valid_for`` = ``valid_for_s``; and /diagnostics (1 Hz).

Lifecycle: the model loads in ``configure`` and is freed in ``cleanup``; the timer runs only
while ``active``; ``deactivate`` stops publishing and sends one ``valid=False`` message that
revokes the last intent, so a controller holds at once instead of waiting for ``valid_for``.
With ``autostart`` (default) the node configures and activates itself at start-up, so a
launch needs no lifecycle manager (if that fails the process exits 1); with
``autostart:=false`` it waits in 'unconfigured' for /intent/change_state. A configure that
cannot load the model returns FAILURE, logs why and leaves the node 'unconfigured'
(lifecycle plumbing: lifecycle.py).

Each tick takes the newest observation not used yet (older ones are simply superseded) and
the current instruction; with no instruction it publishes nothing. Observations from another
model, of the wrong shape, with NaN/Inf, out of order or older than
``max_observation_age_s`` are dropped with a throttled error. All callbacks share the node's
mutually exclusive default group, so a rate change, a lifecycle transition and inference
never overlap.
"""
import dataclasses
import sys
import time

from std_msgs.msg import String

from dial_ros.core.sync import RateMonitor
from dial_ros.msg import LatentTensor
from dial_ros.nodes import common
from dial_ros.nodes.lifecycle import ModelNode, ModelParams, free_memory
from dial_ros.schema import setting

JUMP_BACK_S = 1.0  # an observation this far behind the newest is a clock reset, not disorder
THROTTLE_S = 2.0


@dataclasses.dataclass
class Params(ModelParams):
    """Parameters of the intent node (ROS parameters; see common.declare_params)."""

    intent_rate_hz: float = setting(5.0, 'rate of latent intents (live)', low=0.5, high=30.0,
                                    unit='Hz')
    valid_for_s: float = setting(1.0, 'how long after its observation an intent may be acted '
                                 'upon', low=0.01, high=60.0, unit='s')
    max_observation_age_s: float = setting(0.5, 'observations older than this are not used',
                                           low=0.01, high=60.0, unit='s')
    instruction: str = setting('', "initial instruction; '' = wait for /dial/instruction, "
                               'whose messages replace it')


class IntentNode(ModelNode):
    """System-2 lifecycle node; see the module docstring."""

    def __init__(self, **kwargs):
        super().__init__('intent', **kwargs)
        self.params = common.declare_params(self, Params(), on_change=self._on_param,
                                            check_now=False)
        self._check_validity()
        self.policy = self.model_id = self.pub = self.timer = None
        self.subs = []
        self.text = self.params.instruction.strip()
        self.obs = None          # (header, tokens) of the newest accepted observation
        self.used_stamp = None   # stamp (s) of the observation used last
        self.seq = 0
        self.counts = {key: 0 for key in ('published', 'wrong_model', 'bad_tensor',
                                          'out_of_order', 'stale', 'no_new_obs',
                                          'foresee_errors', 'encode_errors')}
        self.throttle = common.Throttle(self.get_logger(), THROTTLE_S)
        self.compute_ms, self.age_ms = common.WindowStats(), common.WindowStats()
        self._make_monitor()
        self._told_no_instruction = False
        self.diagnostics = common.Diagnostics(self)
        self.create_timer(1.0, self._publish_diagnostics)
        if self.params.autostart:
            self.autostart()

    # --- lifecycle (see lifecycle.ModelNode) ---------------------------------------------
    def configure(self):
        refused = self.load_part('system2')
        if refused:
            return refused
        self.horizon = self.policy.model.config.foresight_horizon
        self.pub = self.create_lifecycle_publisher(LatentTensor, common.TOPIC_INTENT,
                                                   common.QOS_LATENT)
        self.subs = [
            self.create_subscription(LatentTensor, common.TOPIC_OBSERVATION,
                                     self._on_observation, common.QOS_LATENT),
            self.create_subscription(String, common.TOPIC_INSTRUCTION, self._on_instruction,
                                     common.QOS_LATCHED)]
        self.get_logger().info(f'configured: model {self.model_id}, tokens '
                               f'{self.policy.token_shape}, horizon {self.horizon}')

    def activate(self):
        self.obs = self.used_stamp = None  # never act on an observation from before
        self._make_timer()
        self.get_logger().info(f'active: intents at {self.params.intent_rate_hz} Hz')

    def deactivate(self):
        if self.timer is None:
            return  # not active
        self._destroy_timer()
        if self.pub is not None and self.context.ok():
            revoke = LatentTensor(valid=False, dtype='float32', model_id=self.model_id,
                                  seq=self.seq, instruction_id=self._instruction_id())
            revoke.header.stamp = self.get_clock().now().to_msg()
            self.pub.publish(revoke)
            self.seq += 1
        self.get_logger().info('inactive: intents stopped (last one revoked)')

    def release(self):
        had_model = self.policy is not None
        for sub in self.subs:
            self.destroy_subscription(sub)
        if self.pub is not None:
            self.destroy_lifecycle_publisher(self.pub)
        self.subs, self.pub, self.obs, self.used_stamp = [], None, None, None
        device = self.policy.device if had_model else None
        self.policy = self.model_id = None
        if had_model:
            free_memory(device)
            self.get_logger().info('cleaned up: model freed')

    # --- parameters ----------------------------------------------------------------------
    def _make_timer(self):
        self._destroy_timer()
        self.timer = self.create_timer(1.0 / self.params.intent_rate_hz, self._tick)

    def _destroy_timer(self):
        if self.timer is not None:
            self.destroy_timer(self.timer)
            self.timer = None

    def _make_monitor(self):
        hz = self.params.intent_rate_hz
        self.monitor = RateMonitor(hz, max(2.0, 3.0 / hz))

    def _check_validity(self):
        # a warning, not a rejection: sliding the rate down in rqt must not bounce
        period = 1.0 / self.params.intent_rate_hz
        if self.params.valid_for_s < period:
            self.get_logger().warning(
                f'valid_for_s {self.params.valid_for_s} s is shorter than one intent period '
                f'({period:.3g} s): the controller will hold between intents')

    def _on_param(self, name, value):
        # runs in the parameter service callback: serialised with the timer (default group)
        if name == 'intent_rate_hz':
            self._make_monitor()
            if self.timer is not None:
                self._make_timer()
        if name in ('intent_rate_hz', 'valid_for_s'):
            self._check_validity()
        elif name == 'instruction':
            self._set_instruction(value, 'parameter')
        elif name in ('checkpoint', 'embodiment', 'seed', 'device', 'torch_threads'):
            if self.policy is not None:
                self.get_logger().info(f'{name} takes effect at the next configure')
        self.get_logger().info(f'{name} set to {value!r}')

    # --- inputs --------------------------------------------------------------------------
    def _on_instruction(self, msg):
        self._set_instruction(msg.data, 'topic')

    def _set_instruction(self, text, source):
        text = text.strip()
        if text != self.text:
            self.text = text
            self._told_no_instruction = False
            self.get_logger().info(f'instruction ({source}): {text!r} '
                                   f'[{self._instruction_id()}]')

    def _instruction_id(self):
        return common.instruction_id(self.text) if self.text else ''

    def _on_observation(self, msg):
        if msg.model_id != self.model_id:
            self._reject('wrong_model', f'observation from model {msg.model_id!r}, but this '
                         f'node runs {self.model_id!r}; dropped (use the same checkpoint)')
            return
        try:
            tokens = common.read_latent(msg, self.policy.token_shape)
        except ValueError as err:
            self._reject('bad_tensor', f'observation: {err}; dropped', str(err))
            return
        stamp = common.stamp_to_sec(msg.header.stamp)
        if self.obs is not None:
            newest = common.stamp_to_sec(self.obs[0].stamp)
            if newest - JUMP_BACK_S <= stamp <= newest:
                self._reject('out_of_order', f'observation stamp {stamp:.6f} is not newer '
                             f'than {newest:.6f} (out of order or duplicate); dropped')
                return
        self.obs = (msg.header, tokens)

    def _reject(self, kind, text, detail=''):
        self.counts[kind] += 1
        self.throttle('error', (kind, detail), text)

    # --- System-2 ------------------------------------------------------------------------
    def _tick(self):
        if not self.text:
            if not self._told_no_instruction:
                self.get_logger().info(f'no instruction yet on {common.TOPIC_INSTRUCTION}: '
                                       'publishing nothing')
                self._told_no_instruction = True
            return
        if self.obs is None or common.stamp_to_sec(self.obs[0].stamp) == self.used_stamp:
            self.counts['no_new_obs'] += 1
            return
        header, tokens = self.obs
        stamp = common.stamp_to_sec(header.stamp)
        self.used_stamp = stamp
        age = common.now_sec(self) - stamp
        if age > self.params.max_observation_age_s:
            self.counts['stale'] += 1
            self.throttle('warning', 'stale', f'newest observation is {age:.3f} s old '
                          f'(max_observation_age_s {self.params.max_observation_age_s}); '
                          'skipped')
            return
        start = time.perf_counter()
        try:
            intent = self.policy.foresee(tokens, self.text)
        except ValueError as err:
            self._reject('foresee_errors', f'foresee failed: {err}')
            return
        compute = time.perf_counter() - start
        try:
            msg = common.fill_latent(
                LatentTensor(), intent, stamp, self.params.latent_dtype,
                model_id=self.model_id, instruction_id=self._instruction_id(),
                horizon=self.horizon, valid_for=self.params.valid_for_s, valid=True,
                seq=self.seq, compute_time=compute)
        except ValueError as err:  # e.g. a value float16 cannot hold: say so, keep running
            self._reject('encode_errors', f'intent not sent: {err}')
            return
        msg.header = header  # the observation's exact stamp and frame, not now
        self.pub.publish(msg)
        now = common.now_sec(self)
        self.seq += 1
        self.counts['published'] += 1
        self.monitor.tick(now)
        self.compute_ms.add(compute * 1e3)
        self.age_ms.add((now - stamp) * 1e3)

    # --- health --------------------------------------------------------------------------
    def _publish_diagnostics(self):
        state = self.lifecycle_state
        now = common.now_sec(self)
        ok, rate, reason = self.monitor.check(now)
        values = {'state': state, 'target_rate_hz': self.params.intent_rate_hz,
                  'rate_hz': -1.0 if rate is None else rate,
                  'instruction_id': self._instruction_id(), 'model_id': self.model_id or ''}
        _, mean, peak = self.compute_ms.take()
        values.update({'foresee_ms_mean': mean, 'foresee_ms_max': peak})
        _, mean, peak = self.age_ms.take()
        values.update({'age_at_publish_ms_mean': mean, 'age_at_publish_ms_max': peak})
        values.update(self.counts)
        if state != 'active':
            level, message = 'ok', state
        elif not self.text:
            level, message = 'warn', 'no instruction'
        elif not ok:
            level, message = 'warn', f'intent rate: {reason}'
        else:
            level, message = 'ok', 'ok'
        self.diagnostics.publish(level, message, values)


def main(args=None):
    return common.run_node(IntentNode, args)


if __name__ == '__main__':
    sys.exit(main())
