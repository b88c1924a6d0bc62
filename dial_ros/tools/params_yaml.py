"""Write config/humanoid.yaml from the nodes' parameter schemas (the YAML is a view of them).

    python -m dial_ros.tools.params_yaml > config/humanoid.yaml

Every node module declares a ``Params`` dataclass; its defaults, descriptions, ranges and
units become one ``<node>: ros__parameters:`` section with a comment per parameter; the few
values in DEPLOYED (what the humanoid launch runs, where a node's own default differs) are
written instead of the default, and their comment names the node default.
A test regenerates the file and fails on any drift.
"""
import dataclasses
import importlib
import sys

import yaml

NODES = ('sim', 'perception', 'intent', 'controller', 'expert', 'recorder', 'replay')
NODES += ('episodes',)
NODES += ('foresight_view',)
NODES += ('surprise',)  # the surprise monitor (issue 12)
# The embedded sim's task: the intent node starts with it under the launch (its own default,
# '', waits for /dial/instruction). The launch argument instruction:= overrides it.
TASK_INSTRUCTION = 'pick up the cube and lift it'
DEPLOYED = {'intent': {'instruction': TASK_INSTRUCTION}}
HEADER = """\
# dial_ros parameters, one section per node (generated from the nodes' Params schemas by
# `python -m dial_ros.tools.params_yaml`; edit the schema, not this file, or copy it and
# pass your copy with `config:=/path/to/file.yaml`). Every parameter is also settable at run
# time through the node's parameter services (rqt_reconfigure shows ranged ones as sliders).
"""


def node_params(name):
    module = importlib.import_module(f'dial_ros.nodes.{name}')
    return module.Params()


def _flow(value):
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    if text.endswith('\n...'):
        text = text[:-4].strip()
    return text.removesuffix('...').strip()


def _comment(meta):
    parts = [meta['description']]
    if meta.get('unit'):
        parts.append(f'[{meta["unit"]}]')
    if meta.get('low') is not None or meta.get('high') is not None:
        parts.append(f'range {meta.get("low")}..{meta.get("high")}')
    if meta.get('choices'):
        parts.append('one of ' + ', '.join(map(str, meta['choices'])))
    if meta.get('read_only'):
        parts.append('read-only')
    return ' '.join(parts)


def render(nodes=NODES):
    lines = [HEADER]
    for name in nodes:
        params = node_params(name)
        lines.append(f'{name}:\n  ros__parameters:')
        for f in dataclasses.fields(params):
            if 'description' not in f.metadata:
                continue
            comment = _comment(f.metadata)
            value = getattr(params, f.name)
            if f.name in DEPLOYED.get(name, {}):
                comment += f' (node default: {_flow(value)})'
                value = DEPLOYED[name][f.name]
            lines.append(f'    # {comment}')
            value = _flow(value)
            lines.append(f'    {f.name}: {value}')
        lines.append('')
    return '\n'.join(lines)


def main(argv=None):
    sys.stdout.write(render())
    return 0


if __name__ == '__main__':
    sys.exit(main())
