"""Data files through dial_ros.paths; the bundled checkpoint or an error, untrained on request."""
import pytest

from dial_ros import paths


def test_source_checkout_is_the_last_place_looked_in():
    roots = paths.data_roots()
    assert roots[-1] == paths.SOURCE_ROOT
    assert len(roots) == len(set(roots))
    assert paths.config_file('humanoid.yaml').is_file()
    assert (paths.bundled_checkpoint() / 'model.safetensors').is_file()


@pytest.fixture
def no_data(monkeypatch, tmp_path):
    """A package whose data folders are all empty."""
    roots = [tmp_path / 'share' / 'dial_ros', tmp_path / 'src']
    monkeypatch.setattr(paths, 'data_roots', lambda: roots)
    return roots


def test_a_missing_file_names_every_place_looked_in(no_data):
    with pytest.raises(FileNotFoundError) as err:
        paths.config_file('embodiments', 'gr1_sim.yaml')
    for root in no_data:
        assert str(root / 'config' / 'embodiments' / 'gr1_sim.yaml') in str(err.value)


def test_no_bundled_checkpoint_is_an_error_not_an_untrained_model(no_data):
    from dial_ros.model.default import load_model
    with pytest.raises(FileNotFoundError, match='checkpoints/dial_tiny_gr1') as err:
        load_model('')
    assert str(no_data[0] / 'checkpoints' / 'dial_tiny_gr1') in str(err.value)


def test_the_node_loader_names_the_missing_bundled_checkpoint(no_data):
    from dial_ros.nodes.common import load_policy
    with pytest.raises(RuntimeError,
                       match="checkpoint '',.*bundled checkpoint.*checkpoints/dial_tiny_gr1"):
        load_policy('', 'gr1_sim', 0)


def test_untrained_only_when_asked_for_by_name():
    from dial_ros.model.default import load_model
    _, bundled = load_model('')
    assert bundled.startswith('dial_tiny_gr1@')
    _, untrained = load_model(paths.UNTRAINED, 'gr1_sim', seed=3)
    assert untrained.startswith('untrained-tiny@')
    assert load_model(paths.UNTRAINED, 'gr1_sim', seed=3)[1] == untrained  # deterministic
