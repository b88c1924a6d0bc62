"""The humanoid launch takes its settings from the parameter file; arguments override it.

Launches run with sim:=false (no sim: the model nodes load their model and wait for inputs),
which is enough to read what each node runs with through its parameter services and the
model id the controller reports on /diagnostics. What the launch file passes to each node
is also checked without starting anything (its node list, built in a child process with the
runner's launch stand-ins).
"""
import json
import shutil
import subprocess

import pytest
import yaml

from rosgraph import (PYTHON, ROOT, child_env, diagnostic_value, domain_id, RosPeer, start,
                      stop)

PLAN = """
import importlib.util, json, sys, types
from dial_ros.launch_runner.shim import install
install()
spec = importlib.util.spec_from_file_location('humanoid_launch', 'launch/humanoid.launch.py')
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
given = dict(item.split(':=', 1) for item in sys.argv[1:])
context = types.SimpleNamespace(launch_configurations=dict(
    {'sim': 'true', 'driver': 'policy', 'record': 'false', 'config': 'config/humanoid.yaml'},
    **given))
plan = {}
for action in module._nodes(context):
    if getattr(action, 'node_name', None) is not None:
        name = action.node_name[0].perform(None)
        plan[name] = [entry if isinstance(entry, str) else
                      {k: getattr(v, 'value', v) for k, v in entry.items()}
                      for entry in action.parameters]
print(json.dumps(plan))
"""
LAUNCH = [PYTHON, '-m', 'dial_ros.launch_runner', 'dial_ros', 'humanoid.launch.py']
MODEL_NODES = ('perception', 'intent', 'controller')


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    """Two checkpoint folders (same weights, other names: other model ids) that know both
    embodiments, so that a test can tell which folder and embodiment a node loaded."""
    root = tmp_path_factory.mktemp('ckpt')
    out = subprocess.run([PYTHON, '-m', 'dial_ros.model.build', '--out', str(root / 'ckpt_a'),
                          '--embodiment', 'gr1_tabletop', '--embodiment', 'gr1_sim'],
                         cwd=ROOT, env=child_env(0), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    shutil.copytree(root / 'ckpt_a', root / 'ckpt_b')
    return root / 'ckpt_a', root / 'ckpt_b'


def edited_config(path, checkpoint):
    """A copy of config/humanoid.yaml with other control rate, checkpoint and embodiment."""
    data = yaml.safe_load((ROOT / 'config' / 'humanoid.yaml').read_text())
    data['controller']['ros__parameters']['control_rate_hz'] = 150
    for node in MODEL_NODES:
        data[node]['ros__parameters'].update(checkpoint=str(checkpoint), embodiment='gr1_tabletop')
    data['intent']['ros__parameters']['instruction'] = 'wave with the left hand'
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def running_settings(arguments, log_path, names=('control_rate_hz', 'checkpoint',
                                                 'embodiment')):
    """Launch with ``arguments``; return ({node: {name: value}}, controller model id)."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rcl_interfaces.srv import GetParameters
    from rclpy.parameter import parameter_value_to_python
    domain = domain_id('settings')
    launch = start(LAUNCH + ['sim:=false', 'duration:=240'] + arguments, domain, log_path)
    peer = RosPeer(domain)
    try:
        diagnostics = peer.collect(DiagnosticArray, '/diagnostics', 10, stamped=False)
        found = {}
        for node in MODEL_NODES:
            wanted = [n for n in names if node == 'controller' or n != 'control_rate_hz']
            if node == 'intent':
                wanted.append('instruction')
            reply = peer.call(GetParameters, f'/{node}/get_parameters',
                              GetParameters.Request(names=wanted), timeout=150)
            found[node] = {n: parameter_value_to_python(v) for n, v in zip(wanted, reply.values)}

        def model_id():
            return diagnostic_value(diagnostics, '/controller', 'model_id')
        assert peer.spin_until(lambda: model_id() is not None, 60), log_path.read_text()[-3000:]
        return found, model_id()
    finally:
        peer.close()
        assert stop(launch) == 0, log_path.read_text()[-3000:]


@pytest.mark.ros
@pytest.mark.slow
def test_an_edited_copy_of_the_parameter_file_reaches_the_nodes(checkpoints, tmp_path):
    config = edited_config(tmp_path / 'humanoid.yaml', checkpoints[0])
    found, model_id = running_settings([f'config:={config}'], tmp_path / 'launch.log')
    assert found['controller']['control_rate_hz'] == 150
    for node in MODEL_NODES:
        assert found[node]['checkpoint'] == str(checkpoints[0]), node
        assert found[node]['embodiment'] == 'gr1_tabletop', node
    assert found['intent']['instruction'] == 'wave with the left hand'
    assert model_id.startswith('ckpt_a@'), model_id


@pytest.mark.ros
@pytest.mark.slow
def test_an_argument_given_on_the_command_line_wins_over_the_file(checkpoints, tmp_path):
    config = edited_config(tmp_path / 'humanoid.yaml', checkpoints[0])
    found, model_id = running_settings(
        [f'config:={config}', 'control_rate_hz:=120', f'checkpoint:={checkpoints[1]}',
         'embodiment:=gr1_sim', 'instruction:=point at the cube'], tmp_path / 'launch.log')
    assert found['controller']['control_rate_hz'] == 120
    for node in MODEL_NODES:
        assert found[node]['checkpoint'] == str(checkpoints[1]), node
        assert found[node]['embodiment'] == 'gr1_sim', node
    assert found['intent']['instruction'] == 'point at the cube'
    assert model_id.startswith('ckpt_b@'), model_id


def launch_plan(*arguments):
    """{node: its parameters entries} that the launch file makes for ``arguments``."""
    out = subprocess.run([PYTHON, '-c', PLAN, *arguments], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.splitlines()[-1])


def test_only_the_arguments_given_override_the_parameter_file():
    config = 'config/humanoid.yaml'
    plan = launch_plan()
    assert sorted(plan) == ['controller', 'foresight_view', 'intent', 'perception', 'sim',
                            'surprise']
    assert plan['perception'] == plan['intent'] == plan['sim'] == plan['foresight_view'] == \
        plan['surprise'] == [config]
    assert 'surprise' not in launch_plan('surprise:=false')
    assert plan['controller'] == [config, {'simulated': True}]
    plan = launch_plan('sim:=false', 'autostart:=false', 'control_rate_hz:=120',
                       'checkpoint:=/ckpt', 'embodiment:=robot', 'instruction:=wave')
    assert 'sim' not in plan and 'foresight_view' not in plan
    for node in ('perception', 'intent', 'controller'):
        assert plan[node][0] == config
        assert {'autostart': False, 'checkpoint': '/ckpt', 'embodiment': 'robot'}.items() <= \
            plan[node][1].items(), node
    assert plan['controller'][1]['control_rate_hz'] == 120
    assert plan['controller'][1]['simulated'] is False
    assert plan['intent'][1]['instruction'] == 'wave'
    plan = launch_plan('driver:=expert', 'record:=true', 'record_dir:=/demos')
    assert 'controller' not in plan and 'expert' in plan
    # the recorder tags episodes with the instruction the parameter file gives the intent
    assert plan['recorder'][1] == {'output_dir': '/demos', 'follow_expert': True,
                                   'instruction': 'pick up the cube and lift it'}


def test_the_launch_file_spells_untrained_as_the_model_loader_does():
    from dial_ros.paths import UNTRAINED
    text = (ROOT / 'launch' / 'humanoid.launch.py').read_text()
    assert f"UNTRAINED = '{UNTRAINED}'" in text


def refused(arguments, tmp_path):
    """Run the launch; it must exit 1 at once, start no node, and say why."""
    log = tmp_path / 'launch.log'
    launch = start(LAUNCH + arguments, domain_id('refused'), log)
    try:
        code = launch.wait(120)
    finally:
        stop(launch)
    text = log.read_text()
    assert code == 1, text
    assert 'process started' not in text, text
    return text


def test_untrained_model_without_sim_is_refused_by_the_launch(tmp_path):
    text = refused(['sim:=false', 'checkpoint:=untrained'], tmp_path)
    assert "refusing checkpoint 'untrained' with sim:=false" in text, text
    # also when the parameter file asks for it
    data = yaml.safe_load((ROOT / 'config' / 'humanoid.yaml').read_text())
    data['controller']['ros__parameters']['checkpoint'] = 'untrained'
    (tmp_path / 'untrained.yaml').write_text(yaml.safe_dump(data))
    text = refused(['sim:=false', f'config:={tmp_path / "untrained.yaml"}'], tmp_path)
    assert "refusing checkpoint 'untrained' with sim:=false" in text, text


@pytest.mark.ros
def test_the_controller_refuses_an_untrained_model_unless_simulated(tmp_path):
    cmd = [PYTHON, '-m', 'dial_ros.nodes.controller', '--ros-args', '-p',
           'checkpoint:=untrained']
    out = subprocess.run(cmd, cwd=ROOT, env=child_env(domain_id('controller')),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "checkpoint: 'untrained' would send an untrained model's actions" in (
        out.stdout + out.stderr), out.stdout + out.stderr
