"""Embodiment specs: layouts, normalisation, joint order, and clear config errors."""
import numpy as np
import pytest

from dial_ros.embodiment import EmbodimentSpec, load_embodiment


def test_gr1_reference_layout(embodiment):
    assert embodiment.action_dim == 47
    assert embodiment.num_joints == 29
    # 18 end-effector dims raw + 29 joints as sin/cos
    assert embodiment.state_dim == 18 + 2 * 29
    names = [g.name for g in embodiment.action_groups]
    assert names[:4] == ['right_wrist_pos', 'right_wrist_rot6d', 'left_wrist_pos',
                         'left_wrist_rot6d']


def test_normalisation_round_trip_leaves_rot6d_raw(embodiment):
    rng = np.random.default_rng(0)
    spec = embodiment.with_stats(rng.normal(size=47), rng.uniform(0.5, 2, size=47))
    action = rng.normal(size=(16, 47))
    norm = spec.normalize_action(action)
    np.testing.assert_allclose(spec.denormalize_action(norm), action, atol=1e-12)
    np.testing.assert_array_equal(norm[:, 3:9], action[:, 3:9])  # right wrist rot6d
    assert not np.allclose(norm[:, 18:], action[:, 18:])


def test_joint_targets_follow_joint_name_order(embodiment):
    joints = np.arange(embodiment.num_joints, dtype=float)
    action, mask = embodiment.action_from_joints(joints)
    assert mask.sum() == 29 and not mask[:18].any()
    np.testing.assert_array_equal(embodiment.joint_targets(action), joints)


def test_state_encoding_sin_cos_and_masks(embodiment):
    q = np.linspace(-1, 1, embodiment.num_joints)
    state, mask = embodiment.encode_state(q)
    assert mask[18:].all() and not mask[:18].any()
    np.testing.assert_allclose(state[18:18 + 7], np.sin(q[:7]), rtol=1e-6)
    # a human demo: wrist poses only
    state, mask = embodiment.encode_state(eef={'right_wrist_pos': [1, 2, 3]})
    assert mask.sum() == 3 and list(state[:3]) == [1, 2, 3]


def test_missing_file_and_bad_fields():
    with pytest.raises(FileNotFoundError, match='embodiment config not found'):
        load_embodiment('no_such_robot')
    good = load_embodiment('gr1_tabletop').to_dict()
    bad = dict(good, limits=dict(good['limits'], velocity=[1.0] * 3))
    with pytest.raises(ValueError, match='limits.velocity'):
        EmbodimentSpec.from_dict(bad)
    bad = dict(good, action_groups=good['action_groups'][:-1])
    with pytest.raises(ValueError, match='action_groups'):
        EmbodimentSpec.from_dict(bad)
    bad = dict(good, action_groups=[dict(good['action_groups'][0], kind='torque')])
    with pytest.raises(ValueError, match='kind'):
        EmbodimentSpec.from_dict(bad)
