"""The launch runner (dial-ros-launch): CLI, launch API stand-ins and process supervision.

Nodes are test/fixtures/fake_node.py, which records what it received; nothing here needs DDS.
"""
import json
import logging
import os
from pathlib import Path
import signal
import subprocess
import sys
import textwrap
import time
import types

import pytest

from dial_ros.launch_runner import runner, shim, shim_actions, shim_ros

FIXTURES = Path(__file__).resolve().parent / 'fixtures'
DEMO = FIXTURES / 'demo.launch.py'
REPO = FIXTURES.parent.parent
RUNNER = [sys.executable, '-m', 'dial_ros.launch_runner']


def make_env(tmp_path, **changes):
    env = dict(os.environ, FAKE_NODE_RECORD_DIR=str(tmp_path), ROS_LOG_DIR=str(tmp_path / 'log'))
    env.pop('DEMO_HOME', None)
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def launch(tmp_path, *args, env=None, cwd=None, timeout=60):
    start = time.monotonic()
    result = subprocess.run(RUNNER + [str(arg) for arg in args], capture_output=True,
                            text=True, env=env or make_env(tmp_path), cwd=cwd or tmp_path,
                            timeout=timeout)
    result.elapsed = time.monotonic() - start
    return result


def records(tmp_path, name):
    paths = sorted(tmp_path.glob(f'{name}-*.json'), key=lambda p: p.stat().st_mtime)
    return [json.loads(path.read_text()) for path in paths]


def write_launch(tmp_path, body):
    path = tmp_path / 'case.launch.py'
    path.write_text(textwrap.dedent(body))
    return path


def wait_for(predicate, process, timeout=20):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)


def test_show_args_lists_defaults_choices_and_descriptions(tmp_path):
    result = launch(tmp_path, DEMO, '--show-args')
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "'gain':\n        Controller gain\n        (default: '1.5')" in out
    assert "Where the robot lives. Valid choices are: ['sim', 'real']" in out
    assert "'use_extra':" in out and "'duration':" in out
    assert not list(tmp_path.glob('*.json'))


def test_unknown_argument_lists_the_declared_ones(tmp_path):
    result = launch(tmp_path, DEMO, 'gian:=2')
    assert result.returncode == 2
    assert 'unknown launch argument(s) gian' in result.stderr
    assert 'gain, mode, use_extra, duration' in result.stderr


def test_choices_are_enforced(tmp_path):
    result = launch(tmp_path, DEMO, 'mode:=moon')
    assert result.returncode == 2
    assert "argument 'mode' got 'moon'; valid choices are: ['sim', 'real']" in result.stderr


def test_required_argument(tmp_path):
    path = write_launch(tmp_path, """
        from launch import LaunchDescription
        from launch.actions import DeclareLaunchArgument, LogInfo
        from launch.substitutions import LaunchConfiguration

        def generate_launch_description():
            return LaunchDescription([
                DeclareLaunchArgument('robot', description='Robot model'),
                LogInfo(msg=['robot is ', LaunchConfiguration('robot')]),
            ])
    """)
    missing = launch(tmp_path, path)
    assert missing.returncode == 2
    assert "required launch argument 'robot' (Robot model) was not provided" in missing.stderr
    given = launch(tmp_path, path, 'robot:=gr1')
    assert given.returncode == 0, given.stderr
    assert '[INFO] [launch.user]: robot is gr1' in given.stdout


def test_invalid_boolean_is_a_clear_error_and_starts_nothing(tmp_path):
    result = launch(tmp_path, DEMO, 'use_extra:=maybe')
    assert result.returncode == 1
    assert "Unexpected string for condition expression LaunchConfig('use_extra'): 'maybe'" \
        in result.stdout
    assert 'process started' not in result.stdout
    assert not list(tmp_path.glob('*.json'))


def test_duration_arguments_conditions_and_environment(tmp_path):
    env = make_env(tmp_path, ROS_DOMAIN_ID='123', ROS_AUTOMATIC_DISCOVERY_RANGE=None)
    result = launch(tmp_path, DEMO, 'gain:=2.5', 'mode:=real', 'use_extra:=true',
                    'duration:=1.0', env=env, cwd=REPO)  # the repo's launch/ must not confuse
    assert result.returncode == 0, result.stdout + result.stderr
    assert 1.0 <= result.elapsed < 8.0
    out = result.stdout
    assert 'double gain is 5.0 in real mode' in out
    assert 'duration of 1.0 s reached' in out
    assert '[main-1] main ready' in out and '[main-1] main says hello' in result.stderr
    assert '[INFO] [main-1]: process started with pid [' in out
    assert '[INFO] [main-1]: process has finished cleanly' in out
    (main,) = records(tmp_path, 'main')
    assert main['params'] == {
        'from_file': 42, 'gain': 2.5, 'mode': 'real', 'label': 'true', 'is_sim': False,
        'count': 3, 'limits.low': -1.0, 'limits.high': 2, 'ids': [1, 2, 3], 'home': '/nowhere'}
    argv = main['argv']
    assert argv[1] == '--verbose' and argv[2] == '--ros-args'
    assert main['name'] == 'main' and main['namespace'] == '/demo'
    assert main['remaps'] == ['joint_states:=robot/joint_states']
    assert main['params_files'][1].startswith('/**:\n  ros__parameters:\n')
    assert main['pgid'] == main['pid']  # its own process group
    assert records(tmp_path, 'extra') and not records(tmp_path, 'basic')
    for record in records(tmp_path, 'main') + records(tmp_path, 'extra'):
        assert record['env']['ROS_AUTOMATIC_DISCOVERY_RANGE'] == 'LOCALHOST'
        assert record['env']['ROS_DOMAIN_ID'] == '123'  # an explicit setting wins
        assert record['env']['DEMO_FLAG'] == 'on'
        assert record['signals'] == ['SIGINT'] and record['exit'] == 'signal'


@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
def test_signal_to_runner_is_forwarded_as_sigint(tmp_path, signum):
    env = make_env(tmp_path, ROS_DOMAIN_ID=None, ROS_AUTOMATIC_DISCOVERY_RANGE=None,
                   DEMO_HOME='/home/demo')
    process = subprocess.Popen(RUNNER + [str(DEMO)], env=env, cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: records(tmp_path, 'main') and records(tmp_path, 'basic'), process)
        process.send_signal(signum)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, out + err
    assert not records(tmp_path, 'extra')
    for name in ('main', 'basic'):
        (record,) = records(tmp_path, name)
        assert record['signals'] == ['SIGINT'] and record['exit'] == 'signal'
        assert record['env']['ROS_AUTOMATIC_DISCOVERY_RANGE'] == 'LOCALHOST'
        assert record['env']['ROS_DOMAIN_ID'] == '77'  # dial_ros default
    assert records(tmp_path, 'main')[0]['params']['home'] == '/home/demo'
    assert "sending signal 'SIGINT' to process[basic-" in out


def test_stubborn_child_is_escalated_to_sigterm_and_sigkill(tmp_path):
    result = launch(tmp_path, DEMO, 'stubborn:=true', 'duration:=0.3', 'sigkill_timeout:=0.5',
                    '--sigterm-timeout', '0.5')
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.elapsed < 8.0
    (record,) = records(tmp_path, 'stubborn')
    assert record['signals'] == ['SIGINT', 'SIGTERM'] and record['exit'] is None
    assert record['env']['DEMO_FLAG'] == 'stubborn'  # set inside its scoped GroupAction
    assert records(tmp_path, 'main')[0]['env']['DEMO_FLAG'] == 'on'
    assert "failed to terminate '0.5' seconds after receiving 'SIGINT', escalating to " \
        "'SIGTERM'" in result.stdout
    assert "escalating to 'SIGKILL'" in result.stdout
    assert 'exit code -9' in result.stdout


def test_repeated_interrupts_skip_the_grace_periods(tmp_path):
    process = subprocess.Popen(RUNNER + [str(DEMO), 'stubborn:=true', '--sigterm-timeout', '60'],
                               env=make_env(tmp_path), cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        def signals():
            found = records(tmp_path, 'stubborn')
            return found[0]['signals'] if found else None
        wait_for(lambda: signals() == [], process)
        process.send_signal(signal.SIGINT)
        wait_for(lambda: signals() == ['SIGINT'], process)
        process.send_signal(signal.SIGINT)
        wait_for(lambda: signals() == ['SIGINT', 'SIGTERM'], process)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, out + err
    assert 'SIGINT received during shutdown, sending SIGKILL to every process' in out


def test_unstartable_process_is_logged_and_launch_goes_on(tmp_path):
    path = write_launch(tmp_path, """
        from launch import LaunchDescription
        from launch.actions import LogInfo
        from launch_ros.actions import Node

        def generate_launch_description():
            return LaunchDescription([Node(executable='no-such-program-here', output='screen'),
                                      LogInfo(msg='still here')])
    """)
    result = launch(tmp_path, path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'exception occurred while executing process' in result.stdout
    assert 'still here' in result.stdout


def test_on_exit_shutdown_ends_the_launch(tmp_path):
    result = launch(tmp_path, DEMO, 'short_lived:=true')
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.elapsed < 8.0
    assert 'shutting down: short node exited' in result.stdout
    assert records(tmp_path, 'short')[0]['exit'] == 'timeout'
    assert records(tmp_path, 'main')[0]['signals'] == ['SIGINT']


def test_respawn_retries_and_log_output(tmp_path):
    path = write_launch(tmp_path, """
        from launch import LaunchDescription
        from launch_ros.actions import Node

        def generate_launch_description():
            return LaunchDescription([Node(
                executable='fixtures/fake_node.py', name='flaky', respawn=True,
                respawn_delay=0.1, respawn_max_retries=2,
                parameters=[{'exit_after': 0.1, 'exit_code': 3}])])
    """)
    (tmp_path / 'fixtures').symlink_to(FIXTURES)
    result = launch(tmp_path, path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(records(tmp_path, 'flaky')) == 3  # first run and two respawns, then idle
    assert result.stdout.count('process has died') == 3 and 'exit code 3' in result.stdout
    assert 'flaky ready' not in result.stdout  # output='log': stdout to the log file only
    assert '[flaky-1] flaky says hello on stderr' in result.stderr
    (log,) = (tmp_path / 'log').glob('*/launch.log')
    assert '[flaky-1] flaky ready' in log.read_text()


# -- in-process units ----------------------------------------------------------------------

def context(**configurations):
    ctx = shim.LaunchContext()
    ctx.launch_configurations.update(configurations)
    return ctx


def test_python_expression_is_restricted():
    assert shim.safe_eval('2 * 3 > 5 and sqrt(16) == 4.0') is True
    assert shim.safe_eval("'ABC'.lower() == 'abc'") is True
    assert shim.safe_eval('math.pi > 3') is True
    for bad in ("__import__('os')", '().__class__', "'{0.__class__}'.format(1)",
                "open('/etc/passwd')", '[x for x in (1, 2)]'):
        with pytest.raises(ValueError):
            shim.safe_eval(bad)
    expr = shim.PythonExpression([shim.LaunchConfiguration('n'), ' + 1'])
    assert expr.perform(context(n='2')) == '3'


@pytest.mark.parametrize('text,expected', [('true', True), ('True', True), ('1', True),
                                           ('false', False), ('FALSE', False), ('0', False)])
def test_condition_values(text, expected):
    ctx = context(flag=text)
    assert shim.IfCondition(shim.LaunchConfiguration('flag')).evaluate(ctx) is expected
    assert shim.UnlessCondition(shim.LaunchConfiguration('flag')).evaluate(ctx) is not expected


def test_condition_rejects_other_values():
    with pytest.raises(shim.InvalidConditionExpressionError, match="'yes'"):
        shim.IfCondition('yes').evaluate(context())


def test_substitutions():
    ctx = context(a='x')
    ctx.environment['SHIM_TEST_VAR'] = 'v'
    assert shim.perform_substitutions(ctx, ['pre-', shim.LaunchConfiguration('a')]) == 'pre-x'
    assert shim.LaunchConfiguration('b', default='d').perform(ctx) == 'd'
    with pytest.raises(shim.SubstitutionFailure, match="'b'"):
        shim.LaunchConfiguration('b').perform(ctx)
    assert shim.EnvironmentVariable('SHIM_TEST_VAR').perform(ctx) == 'v'
    assert shim.EnvironmentVariable('SHIM_NO_SUCH_VAR', default_value='z').perform(ctx) == 'z'
    with pytest.raises(shim.SubstitutionFailure):
        shim.EnvironmentVariable('SHIM_NO_SUCH_VAR').perform(ctx)
    assert shim.PathJoinSubstitution(['/a', shim.LaunchConfiguration('a'), 'c.yaml']).perform(
        ctx) == '/a/x/c.yaml'


def test_group_scope_and_declare_argument():
    ctx = context(mode='sim')
    actions = [
        shim_actions.DeclareLaunchArgument('rate', default_value='10'),
        shim_actions.GroupAction([shim_actions.SetLaunchConfiguration('inner', '1'),
                                  shim_actions.SetEnvironmentVariable('SHIM_GROUP', 'g')]),
        shim_actions.GroupAction([shim_actions.SetLaunchConfiguration('outer', '1')],
                                 scoped=False),
    ]
    shim_actions.visit_entities(actions, ctx)
    assert ctx.launch_configurations == {'mode': 'sim', 'rate': '10', 'outer': '1'}
    assert 'SHIM_GROUP' not in ctx.environment
    with pytest.raises(RuntimeError, match='Valid options'):
        shim_actions.DeclareLaunchArgument('mode', choices=['real']).visit(ctx)


def test_parameter_values_follow_launch_ros_typing():
    ctx = context(f='0.5', b='True', s='hello', n='7', empty='', colon='pick: up')
    lc = shim.LaunchConfiguration
    values = shim_ros.evaluate_parameter_dict(ctx, {
        'f': lc('f'), 'b': lc('b'), 's': lc('s'), 'n': [lc('n')], 'plain': 'true',
        'joined': ['v', lc('n')], 'mixed': [1, 2.5], 'nested': {'deep': {'x': lc('n')}},
        'list': shim.TextSubstitution(text='[1, 2]'), 'empty': lc('empty'),
        'as_str': shim_ros.ParameterValue(lc('n'), value_type=str),
        'colon': shim_ros.ParameterValue(lc('colon'), value_type=str),
        'as_float': shim_ros.ParameterValue(lc('n'), value_type=float)})
    assert values == {'f': 0.5, 'b': True, 's': 'hello', 'n': 7, 'plain': 'true',
                      'joined': 'v7', 'mixed': [1.0, 2.5], 'nested.deep.x': 7, 'list': [1, 2],
                      'empty': '', 'as_str': '7', 'colon': 'pick: up', 'as_float': 7.0}
    assert type(values['as_float']) is float
    for bad in ('{a: 1}', 'pick: up', '[1, a'):
        with pytest.raises(TypeError, match='ParameterValue'):
            shim_ros.evaluate_parameter_dict(ctx, {'bad': shim.TextSubstitution(text=bad)})


def test_node_command_resolution(tmp_path, monkeypatch):
    prefix = tmp_path / 'prefix'
    (prefix / 'share' / 'ament_index' / 'resource_index' / 'packages').mkdir(parents=True)
    (prefix / 'share' / 'ament_index' / 'resource_index' / 'packages' / 'pkg_a').touch()
    (prefix / 'share' / 'pkg_a' / 'launch').mkdir(parents=True)
    (prefix / 'share' / 'pkg_a' / 'launch' / 'bringup.launch.py').touch()
    exe = prefix / 'lib' / 'pkg_a' / 'talker'
    exe.parent.mkdir(parents=True)
    exe.write_text('#!/bin/sh\n')
    exe.chmod(0o755)
    pkg = tmp_path / 'py' / 'pkg_b' / 'nodes'
    pkg.mkdir(parents=True)
    (pkg.parent / '__init__.py').touch()
    (pkg / '__init__.py').touch()
    (pkg / 'listener.py').touch()
    monkeypatch.setenv('AMENT_PREFIX_PATH', str(prefix))
    monkeypatch.syspath_prepend(str(tmp_path / 'py'))
    assert shim_ros.node_command('pkg_a', 'talker') == [str(exe)]
    assert shim_ros.node_command('pkg_b', 'listener') == [
        sys.executable, '-m', 'pkg_b.nodes.listener']
    assert shim_ros.node_command(None, 'fake_node.py', str(FIXTURES)) == [
        sys.executable, str(FIXTURES / 'fake_node.py')]
    with pytest.raises(shim.SubstitutionFailure, match="'nope' not found in package 'pkg_a'"):
        shim_ros.node_command('pkg_a', 'nope')
    assert runner.resolve_launch_file('pkg_a', 'bringup.launch.py') == str(
        prefix / 'share' / 'pkg_a' / 'launch' / 'bringup.launch.py')
    with pytest.raises(runner.LaunchRunnerError, match='bringup.launch.py'):
        runner.resolve_launch_file('pkg_a', 'missing.launch.py')
    with pytest.raises(runner.LaunchRunnerError, match="package 'no_such_pkg' not found"):
        runner.resolve_launch_file('no_such_pkg', 'x.launch.py')


def test_node_namespaces_and_lifecycle_node():
    ctx = context()
    ctx.extend_locals({'current_launch_file_directory': str(FIXTURES)})
    shim_ros.PushRosNamespace('robot').visit(ctx)
    node = shim_ros.LifecycleNode(executable='fake_node.py', name='lc', namespace='arm',
                                  ros_arguments=['--log-level', 'warn'])
    assert node._command(ctx) == [
        sys.executable, str(FIXTURES / 'fake_node.py'), '--ros-args', '--log-level', 'warn',
        '-r', '__node:=lc', '-r', '__ns:=/robot/arm']
    absolute = shim_ros.Node(executable='fake_node.py', namespace='/top')
    assert absolute._command(ctx)[-2:] == ['-r', '__ns:=/top']
    with pytest.raises(TypeError):
        shim_ros.LifecycleNode(executable='fake_node.py', name='no_namespace')


def test_find_package_share_source_checkout(monkeypatch):
    monkeypatch.delenv('AMENT_PREFIX_PATH', raising=False)
    share = Path(shim_ros.find_package_share('dial_ros'))
    assert share == REPO and (share / 'package.xml').is_file()


def test_real_launch_is_used_when_importable(tmp_path, monkeypatch):
    calls = []

    class FakeService:
        def __init__(self, argv=(), debug=False):
            calls.append(('argv', list(argv)))

        def include_launch_description(self, description):
            calls.append(('include', description.entities[0]))

        def run(self):
            return 7

    def module(name, **attrs):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
        sys.modules[name].__dict__.update(attrs)
        parent, _, child = name.rpartition('.')
        if parent:
            setattr(sys.modules[parent], child, sys.modules[name])

    module('launch', LaunchDescription=shim_actions.LaunchDescription, LaunchService=FakeService)
    module('launch.actions', DeclareLaunchArgument=shim_actions.DeclareLaunchArgument,
           IncludeLaunchDescription=lambda source, launch_arguments: (source, launch_arguments))
    module('launch.launch_description_sources', AnyLaunchDescriptionSource=lambda path: path)
    module('launch_ros')
    module('launch_ros.actions')
    path = write_launch(tmp_path, """
        import launch
        import launch.actions

        def generate_launch_description():
            return launch.LaunchDescription([launch.actions.DeclareLaunchArgument('x')])
    """)
    assert runner.real_launch_available()
    log = logging.getLogger('dial_ros.launch_runner')
    monkeypatch.setattr(log, 'handlers', [])
    monkeypatch.setattr(log, 'propagate', True)
    assert runner.main([str(path), 'x:=2']) == 7
    assert calls == [('argv', ['x:=2']), ('include', (str(path), [('x', '2')]))]
