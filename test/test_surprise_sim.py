"""Perturbations in the embedded sim, and the surprise they cause with the bundled checkpoint.

The perturbations (dial_ros/sim/perturb.py) must change what the head camera sees and reset
must undo them; then one seed runs nominal and with the camera occluded through the fast
evaluator's loop (the stack's clocks) and the surprise monitor's core: the perturbed run's
peak surprise after the perturbation exceeds the nominal run's.
"""
import numpy as np
import pytest

from dial_ros.sim import perturb
from dial_ros.sim.gr1_env import GR1Sim


@pytest.fixture(scope='module')
def sim():
    with GR1Sim(camera_size=224, seed=0) as shared:
        yield shared


def changed_pixels(a, b):
    return float(np.mean(np.any(a != b, axis=2)))


@pytest.mark.parametrize('kind', perturb.KINDS)
def test_each_perturbation_changes_the_image_and_reset_undoes_it(sim, kind):
    before = sim.reset(seed=3)['image']
    cube = sim.cube_pose()[0]
    perturb.apply(sim, kind, np.random.default_rng(0))
    after = sim.render()
    assert changed_pixels(before, after) > 0.001, kind
    moved = np.linalg.norm(sim.cube_pose()[0] - cube)
    if kind == 'move_cube':
        assert 0.07 < moved < 0.13
    elif kind == 'remove_cube':
        assert moved > 1.0
    else:
        assert moved < 1e-6
    sim.step(sim.targets)  # the world keeps running with the change
    assert np.array_equal(sim.reset(seed=3)['image'], before)


def test_bad_perturbations_are_named(sim):
    with pytest.raises(ValueError, match="'melt_cube' is not one of"):
        perturb.apply(sim, 'melt_cube', np.random.default_rng(0))
    with pytest.raises(ValueError, match='occlusion: 1.5 is not a fraction'):
        perturb.occlude_camera(sim, 1.5)


def test_an_occluded_camera_is_more_surprising_than_the_nominal_run():
    from dial_ros.evaluate.surprise import alarm_rules, first_alarm, first_takeover, make_loop
    from dial_ros.model.default import load_model
    from dial_ros.model.policy import DialPolicy
    model, _ = load_model('')
    with GR1Sim() as sim:
        loop = make_loop(2.5, 5.0)(sim, DialPolicy(model))
        peaks, runs = {}, {}
        for kind in (None, 'occlude_camera'):
            runs[kind] = scores = loop.episode(700001, kind, perturb_step=40, window=60)
            assert scores, 'no intent was scored'
            peaks[kind] = max(value for frame, value, *_ in scores if frame >= 40)
    assert peaks['occlude_camera'] > 2.0 * peaks[None], peaks
    # the node's ERROR rule (the relative error fires at once) with its default thresholds
    error = alarm_rules(2.5, 5.0, 0.5)['error']
    assert not any(error(x) for x in runs[None])
    assert first_alarm(runs['occlude_camera'], 40, error) <= 5
    # the controller's surprise_takeover_s 0.5 replayed: it takes over the occluded run only
    assert first_takeover(runs[None], 0, error, 0.5) is None
    assert 10 <= first_takeover(runs['occlude_camera'], 40, error, 0.5) <= 20
