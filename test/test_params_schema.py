"""config/humanoid.yaml is a view of the nodes' parameter schemas: no drift allowed."""
import pathlib

import yaml

from dial_ros.schema import described_fields, validate
from dial_ros.tools import params_yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_humanoid_yaml_is_generated_from_the_schemas():
    committed = (ROOT / 'config' / 'humanoid.yaml').read_text()
    assert committed == params_yaml.render(), (
        'config/humanoid.yaml drifted: run python -m dial_ros.tools.params_yaml > '
        'config/humanoid.yaml')


def test_every_section_validates_against_its_schema():
    data = yaml.safe_load((ROOT / 'config' / 'humanoid.yaml').read_text())
    for node in params_yaml.NODES:
        params = params_yaml.node_params(node)
        for key, value in data[node]['ros__parameters'].items():
            assert hasattr(params, key), f'{node}.{key} is not in the schema'
            setattr(params, key, value)
        validate(params)


def test_every_setting_has_a_description_and_numeric_ones_a_range():
    for node in params_yaml.NODES:
        params = params_yaml.node_params(node)
        for f, meta in described_fields(params):
            assert meta['description'], f'{node}.{f.name} has no description'
            value = getattr(params, f.name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                ranged = meta['low'] is not None and meta['high'] is not None
                assert ranged or meta.get('read_only'), f'{node}.{f.name} has no range'
