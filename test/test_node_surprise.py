"""The surprise node as a real process over DDS: /dial/surprise and diagnostics levels.

The test stands in for perception and the intent node: it publishes observation latents
stamped one control period apart and an intent whose foresight has a known surprise
against them (the copy of its own frame scores 1; moving the wrong way scores 4), then reads
/dial/surprise and the node's /diagnostics while the thresholds change live.
"""
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

from dial_ros.codecs import fill_latent, now_sec, stamp_to_sec
from dial_ros.msg import LatentTensor, Surprise
from dial_ros.nodes.qos import QOS_LATENT
from dial_ros.topics import TOPIC_INTENT, TOPIC_OBSERVATION, TOPIC_SURPRISE
from rosgraph import running_node
from test_node_perception import domain_for

pytestmark = pytest.mark.ros

SHAPE = (64, 64)
PERIOD = 0.05
HORIZON = 4


class Stack:
    """Perception and intent stand-ins on the peer's node."""

    def __init__(self, peer):
        self.peer = peer
        self.obs = peer.node.create_publisher(LatentTensor, TOPIC_OBSERVATION, QOS_LATENT)
        self.intent = peer.node.create_publisher(LatentTensor, TOPIC_INTENT, QOS_LATENT)
        self.rng = np.random.default_rng(0)

    def wait_matched(self):
        assert self.peer.spin_until(lambda: self.obs.get_subscription_count() > 0
                                    and self.intent.get_subscription_count() > 0, 30.0)

    def episode(self, k):
        """Frames t .. t + H; an intent at t whose foresight is (1 - k)^2 as far off as a copy."""
        t0 = now_sec(self.peer.node)
        frames = [self.rng.standard_normal(SHAPE)]
        for _ in range(HORIZON):
            frames.append(frames[-1] + 0.5 * self.rng.standard_normal(SHAPE))
        foresight = frames[0] + k * (frames[-1] - frames[0])
        self.intent.publish(fill_latent(LatentTensor(), foresight, t0, model_id='m', valid=True,
                                        horizon=HORIZON))
        for i, tokens in enumerate(frames):
            self.obs.publish(fill_latent(LatentTensor(), tokens, t0 + i * PERIOD,
                                         model_id='m', valid=True))
            self.peer.run(0.02)
        return t0

    def scored(self, got, k, timeout=30.0):
        """Send episodes until the node publishes one more score (the first ones can be lost
        while discovery completes on the node's side); returns (intent stamp, message)."""
        before = len(got)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            t0 = self.episode(k)
            if self.peer.spin_until(lambda: len(got) > before, 3.0):
                return t0, got[-1]
        raise AssertionError(f'no /dial/surprise message in {timeout} s')


def next_diagnostics(peer, diags, start, timeout=15.0):
    """The node's first /diagnostics status after ``diags[start]`` that scored an intent."""

    def mine():
        for msg in diags[start:]:
            for status in msg.status:
                values = {kv.key: kv.value for kv in status.values}
                if status.name == '/surprise' and int(values['scored_last_period']) > 0:
                    return status
        return None
    assert peer.spin_until(lambda: mine() is not None, timeout), 'no diagnostics with a score'
    return mine()


def test_surprise_topic_and_diagnostics_follow_the_thresholds(tmp_path):
    domain = domain_for('surprise_node')
    with running_node('surprise', domain, tmp_path / 'surprise.log',
                      warn_threshold=2.0, error_threshold=5.0,
                      relative_mse_error=0.0) as (peer, proc):
        got = peer.collect(Surprise, TOPIC_SURPRISE, 10, stamped=False)
        diags = peer.collect(DiagnosticArray, '/diagnostics', 10, stamped=False)
        stack = Stack(peer)
        stack.wait_matched()

        mark = len(diags)
        t0, msg = stack.scored(got, k=0.0)  # the copy of its own frame: surprise 1, OK
        assert stamp_to_sec(msg.header.stamp) == pytest.approx(t0, abs=1e-6)
        assert stamp_to_sec(msg.target_stamp) == pytest.approx(t0 + HORIZON * PERIOD, abs=1e-6)
        assert msg.horizon == HORIZON
        assert msg.surprise == pytest.approx(1.0, rel=1e-4)
        assert msg.mse == pytest.approx(msg.copy_mse, rel=1e-4) and msg.level == Surprise.OK
        assert next_diagnostics(peer, diags, mark).level == DiagnosticStatus.OK

        mark = len(diags)
        stack.scored(got, k=-1.0)  # foresaw the opposite motion: surprise 4 -> WARN (2 <= 4 < 5)
        assert got[-1].surprise == pytest.approx(4.0, rel=1e-3)
        assert got[-1].level == Surprise.WARN
        status = next_diagnostics(peer, diags, mark)
        assert status.level == DiagnosticStatus.WARN and 'warn_threshold' in status.message

        # live, as rqt does: error at 3 makes the same surprise an ERROR
        peer.set_parameters('surprise', error_threshold=3.0)
        mark = len(diags)
        stack.scored(got, k=-1.0)
        assert got[-1].level == Surprise.ERROR
        assert next_diagnostics(peer, diags, mark).level == DiagnosticStatus.ERROR

        # warn must stay below error: refused with the reason, the old values kept
        with pytest.raises(ValueError, match='error_threshold .* greater than warn_threshold'):
            peer.set_parameters('surprise', warn_threshold=3.5)
        mark = len(diags)
        stack.scored(got, k=-1.0)
        assert got[-1].level == Surprise.ERROR

        # surprise 4 below warn 5, but the error is ~2x the tokens' variance: the relative
        # rule alone makes it an ERROR
        peer.set_parameters('surprise', error_threshold=10.0)
        peer.set_parameters('surprise', warn_threshold=5.0, relative_mse_error=1.0)
        mark = len(diags)
        stack.scored(got, k=-1.0)
        assert got[-1].surprise < 5.0 and got[-1].relative_mse > 1.0
        assert got[-1].level == Surprise.ERROR
        status = next_diagnostics(peer, diags, mark)
        assert status.level == DiagnosticStatus.ERROR and 'relative_mse' in status.message


def test_sim_node_perturbation_parameter_changes_the_running_episode(tmp_path):
    """Setting the sim's ``perturbation`` acts at once: the cube leaves the table; a bad
    name is refused with the choices."""
    from geometry_msgs.msg import PoseStamped

    from dial_ros.topics import TOPIC_OBJECT_POSE
    domain = domain_for('surprise_sim_perturbation')
    with running_node('sim', domain, tmp_path / 'sim.log', publish_camera=False,
                      seed=3) as (peer, proc):
        poses = peer.collect(PoseStamped, TOPIC_OBJECT_POSE, 10, stamped=False)
        assert peer.spin_until(lambda: poses, 30.0), (tmp_path / 'sim.log').read_text()
        start = poses[-1].pose.position
        peer.set_parameters('sim', perturbation='remove_cube')
        count = len(poses)
        assert peer.spin_until(lambda: len(poses) > count + 2, 10.0)
        now = poses[-1].pose.position
        assert abs(now.x - start.x) > 1.0 and now.x < -1.5  # parked off the table
        with pytest.raises(ValueError, match='one of'):
            peer.set_parameters('sim', perturbation='melt_cube')
