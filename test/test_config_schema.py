"""Model configuration: every bad value names its field."""
import pytest

from dial_ros.model.config import ModelConfig, paper_config, tiny_config


def test_tiny_and_paper_presets_validate():
    assert tiny_config().num_foresight == 64
    paper = paper_config('/models/Qwen2.5-VL-3B-Instruct')
    assert paper.system1.dit_layers == 16 and paper.vlm.scale == 'paper'


@pytest.mark.parametrize('data,field', [
    ({'system1': {'inference_steps': 0}}, 'system1.inference_steps'),
    ({'vlm': {'scale': 'huge'}}, 'vlm.scale'),
    ({'vlm': {'image_size': 230}}, 'vlm.image_size'),
    ({'num_foresight': 32}, 'num_foresight'),
    ({'recipe': 'seer'}, 'recipe'),
    ({'system1': {'horizon': 'sixteen'}}, 'system1.horizon'),
    ({'system1': {'dit_layer': 4}}, 'dit_layer'),
])
def test_bad_values_name_the_field(data, field):
    with pytest.raises(ValueError, match=field.replace('.', r'\.')):
        ModelConfig.from_dict(data)


def test_round_trip_through_dict():
    config = tiny_config(recipe='apt')
    assert ModelConfig.from_dict(config.to_dict()) == config
