"""The fast in-process evaluator, the reach-slope tool and the open-loop diagnostics.

The closed loop is the embedded sim plus the controller's core objects (chunk scheduler,
safety filter) on the stack's clocks; its success signal must be able to fail, and the reach
slope must tell a policy that looks at the cube from one that does not.
"""
import math

import numpy as np
import pytest
import yaml

from dial_ros.evaluate.closed_loop import (ClosedLoop, ControllerSettings,
                                           DEFAULT_INSTRUCTION, PARAMS_FILE)
from dial_ros.evaluate.metrics import mcnemar_exact, paired_difference
from dial_ros.evaluate.reach import reach_summary, slope


@pytest.fixture(scope='module')
def sim():
    import dial_ros.sim  # noqa: F401 - headless GL backend
    from dial_ros.sim.gr1_env import GR1Sim
    with GR1Sim() as shared:
        yield shared


@pytest.fixture(scope='module')
def policy():
    from dial_ros.model.default import load_model
    from dial_ros.model.policy import DialPolicy
    return DialPolicy(load_model()[0])


class StartPose:
    """A policy that commands the start pose forever (it never grasps)."""

    def __init__(self, policy):
        self.inner, self.embodiment, self.joint_names = policy, policy.embodiment, \
            policy.joint_names
        self.pose = None

    def encode_frame(self, image):
        return np.zeros(self.inner.token_shape, np.float32)

    def foresee(self, tokens, instruction):
        return tokens

    def act(self, tokens, intent, joints, seed=None):
        if self.pose is None:
            self.pose = np.array(joints)
        return np.repeat(self.pose[None], 16, axis=0)


class Blind:
    """The trained policy fed the tokens of one fixed frame: it cannot see the cube."""

    def __init__(self, policy, image):
        self.inner, self.embodiment, self.joint_names = policy, policy.embodiment, \
            policy.joint_names
        self.tokens = policy.encode_frame(image)

    def encode_frame(self, image):
        return self.tokens

    def foresee(self, tokens, instruction):
        return self.inner.foresee(tokens, instruction)

    def act(self, tokens, intent, joints, seed=None):
        return self.inner.act(tokens, intent, joints, seed=seed)


def test_settings_come_from_the_deployed_parameter_file():
    s = ControllerSettings.from_params_file(PARAMS_FILE)
    assert s.control_rate_hz == 200 and s.chunk_rate_hz == 10.0 and s.interpolation == 'cubic'
    deployed = yaml.safe_load(PARAMS_FILE.read_text())['intent']['ros__parameters']
    assert deployed['instruction'] == DEFAULT_INSTRUCTION


def test_a_policy_that_holds_the_start_pose_never_succeeds(sim, policy):
    loop = ClosedLoop(sim, StartPose(policy), timeout_s=3.0)
    episodes = [loop.run('seen', i, 100000 + i) for i in range(2)]
    assert not any(e.success for e in episodes)
    assert all(e.progress == 0.0 and e.closest_cm > 6.0 for e in episodes)
    assert all(e.duration_s == pytest.approx(3.0, abs=0.06) for e in episodes)


def test_sync_mode_and_bad_arguments(sim, policy):
    loop = ClosedLoop(sim, StartPose(policy), mode='sync', replan_steps=4, timeout_s=1.0)
    assert not loop.run('seen', 0, 100000).success
    with pytest.raises(ValueError, match='mode'):
        ClosedLoop(sim, policy, mode='fast')


def test_reach_slope_of_a_blind_policy_is_near_zero(sim, policy):
    """Fed one fixed frame, the trained policy reaches to one place whatever the cube's
    position: the palm's closest approach does not follow the cube."""
    image = sim.reset(seed=100000)['image']
    loop = ClosedLoop(sim, Blind(policy, image), timeout_s=3.0)
    episodes = [vars(loop.run('seen', i, 100000 + i)) for i in range(5)]
    summary = reach_summary(episodes)
    assert summary['episodes'] == 5
    assert abs(summary['slope_x']) < 0.35 and abs(summary['slope_y']) < 0.35, summary


def test_slope_and_reach_summary():
    cube = np.array([[-0.5, 0.1], [-0.45, 0.15], [-0.4, 0.05], [-0.48, 0.12]])
    follows = [{'closest_cm': 2.0, 'cube_start': [*c, 0.8], 'palm_at_closest': [*c, 0.9]}
               for c in cube]
    assert reach_summary(follows)['slope_x'] == pytest.approx(1.0)
    assert reach_summary(follows)['reached'] == 1.0
    fixed = [dict(e, palm_at_closest=[-0.45, 0.1, 0.9], closest_cm=8.0) for e in follows]
    assert reach_summary(fixed)['slope_y'] == pytest.approx(0.0, abs=1e-9)
    assert reach_summary(fixed)['reached'] == 0.0
    assert math.isnan(slope([1.0, 1.0], [2.0, 3.0])[0])


def test_paired_difference_and_mcnemar():
    a = {s: s % 10 != 0 for s in range(100)}          # 90 %
    b = {s: s % 2 == 0 for s in range(100)}           # 50 %
    d = paired_difference(a, b)
    assert d['pairs'] == 100 and d['difference'] == pytest.approx(0.4)
    assert d['ci95_low'] > 0.25 and d['ci95_high'] < 0.55
    assert d['only_a'] == 50 and d['only_b'] == 10 and d['mcnemar_p'] < 1e-6
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(3, 3) == 1.0
    with pytest.raises(ValueError, match='share no seeds'):
        paired_difference({1: True}, {2: True})


def test_an_apt_stage2_model_runs_with_its_fusion_features(sim):
    """APT stage 2 needs the LLM features with every chunk: the loop passes them along."""
    from dial_ros.embodiment import load_embodiment
    from dial_ros.model.config import tiny_config
    from dial_ros.model.dial import DialModel
    from dial_ros.model.policy import DialPolicy
    model = DialModel(tiny_config(recipe='apt'), [load_embodiment('gr1_sim')])
    model.set_stage('apt_language')
    loop = ClosedLoop(sim, DialPolicy(model), timeout_s=0.5)
    assert loop._needs_features
    episode = loop.run('seen', 0, 100000)
    assert not episode.success and episode.duration_s == pytest.approx(0.5, abs=0.06)
