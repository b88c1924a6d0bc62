"""Every bad input at the inference boundary gives a ValueError that names the problem."""
import numpy as np
import pytest

from dial_ros.model.policy import DialPolicy


@pytest.fixture
def policy(make_model):
    return DialPolicy(make_model())


@pytest.fixture
def good(policy, embodiment):
    tokens = np.zeros(policy.token_shape, np.float32)
    return tokens, tokens.copy(), np.zeros(embodiment.num_joints)


@pytest.mark.parametrize('image,message', [
    (np.zeros((224, 224, 3), np.float32), 'dtype uint8'),
    (np.zeros((224, 224), np.uint8), r'shape \(H, W, 3\)'),
    (np.zeros((224, 224, 4), np.uint8), r'shape \(H, W, 3\)'),
    (np.zeros((480, 640, 3), np.uint8), 'expected size 224x224, got 640x480'),
    ([[0]], 'numpy array'),
])
def test_bad_images(policy, image, message):
    with pytest.raises(ValueError, match=message):
        policy.encode_frame(image)


def test_nan_and_inf_tokens(policy, good):
    tokens, intent, joints = good
    bad = tokens.copy()
    bad[3, 5] = np.nan
    with pytest.raises(ValueError, match='obs_tokens: contains NaN'):
        policy.foresee(bad, 'lift')
    bad[3, 5] = np.inf
    with pytest.raises(ValueError, match='intent: contains Inf'):
        policy.act(tokens, bad, joints)


def test_shape_mismatches(policy, good):
    tokens, intent, joints = good
    with pytest.raises(ValueError, match=r'obs_tokens: expected shape \(64, 64\), got \(32, 64\)'):
        policy.foresee(tokens[:32], 'lift')
    with pytest.raises(ValueError, match='intent: expected shape'):
        policy.act(tokens, intent[:, :10], joints)
    with pytest.raises(ValueError, match='joint_positions: expected shape'):
        policy.act(tokens, intent, joints[:5])
    with pytest.raises(ValueError, match='joint_positions: contains NaN'):
        policy.act(tokens, intent, np.full_like(joints, np.nan))


def test_bad_dtype_and_instruction(policy, good):
    tokens, intent, joints = good
    with pytest.raises(ValueError, match='float array'):
        policy.foresee(tokens.astype(np.int32), 'lift')
    with pytest.raises(ValueError, match='instruction'):
        policy.foresee(tokens, '')


def test_unknown_embodiment(make_model):
    with pytest.raises(ValueError, match='embodiment'):
        DialPolicy(make_model(), embodiment='atlas')
