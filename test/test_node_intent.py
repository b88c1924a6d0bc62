"""The intent (System-2) lifecycle node as a real process over DDS.

Intents follow the observations at ``intent_rate_hz``, stamped with the observation; the rate
changes live through the parameter service (as rqt does); lifecycle services work (a
refused configure, activate / deactivate twice, cleanup).
"""
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from std_msgs.msg import String

from dial_ros.codecs import fill_latent, instruction_id, now_sec, read_latent, stamp_to_sec
from dial_ros.msg import LatentTensor
from dial_ros.nodes import common
from dial_ros.nodes.qos import QOS_LATCHED, QOS_LATENT
from dial_ros.topics import TOPIC_INSTRUCTION, TOPIC_INTENT, TOPIC_OBSERVATION
from rosgraph import change_state, lifecycle_state, running_node, stop_node
from test_node_perception import EMBODIMENT, domain_for, key_of, wait_for_log

pytestmark = pytest.mark.ros


@pytest.fixture(scope='module')
def model():
    """model_id, token shape and foresight horizon of the model the child builds."""
    policy, model_id = common.load_policy('', EMBODIMENT, 0)
    return model_id, policy.token_shape, policy.model.config.foresight_horizon


@pytest.fixture
def intent(tmp_path, request):
    """Start the node with ``request.param`` as extra parameters; yield (peer, proc, log)."""
    domain = domain_for(request.node.name)
    log = tmp_path / 'intent.log'
    params = dict(embodiment=EMBODIMENT, intent_rate_hz=5.0, **getattr(request, 'param', {}))
    with running_node('intent', domain, log, **params) as (peer, proc):
        yield peer, proc, log


class Perception:
    """Stands in for the perception node: publishes observation latents, stamped now."""

    def __init__(self, peer, model_id, shape):
        self.peer, self.model_id, self.shape = peer, model_id, shape
        self.pub = peer.node.create_publisher(LatentTensor, TOPIC_OBSERVATION,
                                              QOS_LATENT)
        self.rng = np.random.default_rng(0)
        self.sent = {}  # stamp -> send time

    def publish(self, tokens=None, model_id=None):
        tokens = self.rng.standard_normal(self.shape) if tokens is None else tokens
        msg = fill_latent(LatentTensor(), tokens, now_sec(self.peer.node),
                          model_id=model_id or self.model_id, valid=True)
        self.pub.publish(msg)
        self.sent[key_of(msg)] = time.monotonic()


def state(peer):
    return lifecycle_state(peer, 'intent')


def set_rate(peer, hz):
    value = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=hz)
    request = SetParameters.Request(parameters=[Parameter(name='intent_rate_hz', value=value)])
    return peer.call(SetParameters, '/intent/set_parameters', request).results[0]


def last_diagnostics(diags):
    status = [s for _, d in diags for s in d.status if s.name == '/intent']
    return {kv.key: kv.value for kv in status[-1].values} if status else {}


def rate_of(intents, since):
    """Rate from the intents' stamps (their observations' times), not their arrival.

    Late delivery in a burst does not inflate it; only ticks the node skipped lower it.
    """
    times = [stamp_to_sec(m.header.stamp) for t, m in intents if t >= since and m.valid]
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 2 else 0.0


def measure_rate(peer, camera, intents, target_hz, windows=3):
    """Best intent rate over up to ``windows`` 2.5 s windows of 20 Hz observations.

    The CPU is shared with other test runs (some at real-time priority): a starved node
    skips ticks (never queues them), so one bad window does not measure the node.
    """
    best = 0.0
    for _ in range(windows):
        start = time.monotonic()
        peer.run(2.5, 20.0, camera.publish)
        best = max(best, rate_of(intents, start))
        if abs(best - target_hz) < 0.1 * target_hz:
            break
    return best


def test_intents_follow_observations_and_the_rate_changes_live(intent, model):
    peer, proc, log = intent
    model_id, shape, horizon = model
    assert state(peer) == 'active', log.read_text()
    instruction = peer.node.create_publisher(String, TOPIC_INSTRUCTION,
                                             QOS_LATCHED)
    instruction.publish(String(data='pick up the cube'))
    intents = peer.collect(LatentTensor, TOPIC_INTENT, QOS_LATENT)
    diags = peer.collect(DiagnosticArray, '/diagnostics', 10)
    camera = Perception(peer, model_id, shape)
    assert peer.spin_until(lambda: camera.pub.get_subscription_count() > 0, 30.0)

    peer.run(0.5, 20.0, camera.publish)
    rate5 = measure_rate(peer, camera, intents, 5.0)
    assert 4.0 < rate5 < 6.0, (rate5, last_diagnostics(diags))
    for _, msg in intents:
        assert key_of(msg) in camera.sent, 'intent not stamped with an observation'
        assert msg.valid and msg.model_id == model_id and msg.horizon == horizon
        assert msg.valid_for == 1.0 and msg.compute_time > 0
        assert msg.instruction_id == instruction_id('pick up the cube')
        assert np.isfinite(read_latent(msg, shape)).all()

    result = set_rate(peer, 10.0)
    assert result.successful, result.reason
    instruction.publish(String(data='put the cube down'))
    peer.run(0.3, 20.0, camera.publish)
    rate10 = measure_rate(peer, camera, intents, 10.0)
    ages = [(t - camera.sent[key_of(m)]) * 1e3 for t, m in intents]
    print(f'intent: rate {rate5:.2f} Hz at 5 Hz, {rate10:.2f} Hz at 10 Hz; observation -> '
          f'intent median {np.median(ages):.1f} ms, max {np.max(ages):.1f} ms')
    assert 8.0 < rate10 < 11.5, (rate10, last_diagnostics(diags))
    assert intents[-1][1].instruction_id == instruction_id('put the cube down')

    result = set_rate(peer, 1000.0)
    assert not result.successful and result.reason, 'an out-of-range rate was accepted'
    values = last_diagnostics(diags)
    assert values['state'] == 'active' and float(values['target_rate_hz']) == 10.0, values

    # bad observations: each dropped with an error naming the problem; intents keep coming
    # (spaced out: QOS_LATENT keeps only the newest 2, so a burst would overwrite some)
    for bad in (dict(model_id='another@00000000'), dict(tokens=np.full(shape, np.nan)),
                dict(tokens=np.zeros((shape[0], shape[1] + 1)))):
        camera.publish(**bad)
        peer.run(0.1)
    count = len(intents)
    peer.run(1.0, 20.0, camera.publish)
    assert len(intents) > count + 5 and proc.poll() is None
    for text in (f"'another@00000000', but this node runs '{model_id}'", 'NaN or Inf',
                 'does not match the expected'):
        assert wait_for_log(log, text), f'no error {text!r} in:\n{log.read_text()}'
    assert stop_node(proc) == 0


@pytest.mark.parametrize('intent', [{'autostart': False}], indirect=True)
def test_without_autostart_nothing_is_published_until_configured_and_activated(intent, model):
    peer, proc, log = intent
    model_id, shape, _ = model
    intents = peer.collect(LatentTensor, TOPIC_INTENT, QOS_LATENT)
    camera = Perception(peer, model_id, shape)
    assert state(peer) == 'unconfigured'
    peer.run(0.5, 20.0, camera.publish)

    # a configure that cannot load the model: FAILURE, the reason logged, still unconfigured
    peer.set_parameters('intent', checkpoint='/nonexistent/dial_checkpoint')
    assert not change_state(peer, 'intent', 'configure')
    assert state(peer) == 'unconfigured' and proc.poll() is None
    assert wait_for_log(log, "configure failed: cannot load the system2 part of the "
                        "model (checkpoint "
                        "'/nonexistent/dial_checkpoint'"), log.read_text()
    peer.set_parameters('intent', checkpoint='')

    assert change_state(peer, 'intent', 'configure')
    assert state(peer) == 'inactive'
    peer.run(0.5, 20.0, camera.publish)
    assert change_state(peer, 'intent', 'activate')
    assert state(peer) == 'active'
    peer.run(1.0, 20.0, camera.publish)
    assert not intents, 'published before any instruction'
    assert wait_for_log(log, 'no instruction yet')

    instruction = peer.node.create_publisher(String, TOPIC_INSTRUCTION,
                                             QOS_LATCHED)
    instruction.publish(String(data='wave'))
    for cycle in range(2):  # active, inactive, active again, inactive
        if cycle:
            assert change_state(peer, 'intent', 'activate')
            assert state(peer) == 'active'
        count, end = len(intents), time.monotonic() + 20.0
        while sum(m.valid for _, m in intents[count:]) < 4 and time.monotonic() < end:
            peer.run(0.25, 20.0, camera.publish)
        assert sum(m.valid for _, m in intents[count:]) >= 4, log.read_text()[-3000:]
        assert change_state(peer, 'intent', 'deactivate')
        inactive = common.now_sec(peer.node)
        assert state(peer) == 'inactive'
        assert peer.spin_until(lambda: not intents[-1][1].valid, 5.0), 'intent not revoked'
        peer.run(1.0, 20.0, camera.publish)
        # judged by stamp (the observation's): a loaded machine may deliver earlier ones late
        late = [m for _, m in intents if m.valid
                and common.stamp_to_sec(m.header.stamp) >= inactive]
        assert not late, f'published while inactive (cycle {cycle})'
    assert change_state(peer, 'intent', 'cleanup')
    assert state(peer) == 'unconfigured'
    assert stop_node(proc) == 0
