"""DIAL on a humanoid: perception, System-2 intent, System-1 controller, optional sim/recorder.

    ros2 launch dial_ros humanoid.launch.py                     # embedded GR1 sim (default)
    ros2 launch dial_ros humanoid.launch.py sim:=false          # a real robot (ros2_control)
    ros2 launch dial_ros humanoid.launch.py driver:=expert record:=true   # record demos
    ros2 launch dial_ros humanoid.launch.py driver:=dagger record:=true   # DAgger round
    ros2 launch dial_ros humanoid.launch.py episodes:=true      # episodes, an MP4 each

Every node setting comes from the parameter file (`config:=`, default the installed
config/humanoid.yaml); the arguments in OVERRIDES replace its value only when given on the
command line, so a copy of the file with other values works as it reads.

Written against the standard launch / launch_ros API. Where `ros2 launch` is missing, the
project's runner executes this same file: `.venv/bin/dial-ros-launch humanoid.launch.py`.
"""
import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction, Shutdown, TimerAction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution, PythonExpression
from launch_ros.actions import LifecycleNode, Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare
import yaml

UNTRAINED = 'untrained'  # dial_ros.paths.UNTRAINED: the checkpoint value of an untrained model
DECODER = 'foresight_decoder.safetensors'  # dial_ros.model.foresight_decoder.WEIGHTS
MODEL_NODES = ('perception', 'intent', 'controller')

ARGUMENTS = [
    ('sim', 'true', 'run the embedded simulated GR1 humanoid (false: a robot is attached)'),
    ('config', PathJoinSubstitution([FindPackageShare('dial_ros'), 'config', 'humanoid.yaml']),
     'parameter file with one section per node'),
    ('driver', 'policy', 'who commands the joints: policy (DIAL controller), expert (the '
                         'scripted IK expert, sim only) or dagger (the policy drives, the '
                         'expert takes over through the controller after a random delay)'),
    ('record', 'false', 'start the demo recorder'),
    ('duration', '0', 'stop everything after this many seconds (0 = run until Ctrl-C)'),
    ('episodes', 'false', 'with sim and driver:=policy: run episodes one after another, one '
                          'line and one MP4 each (scripts/run.sh sets true)'),
    ('foresight_view', '', 'publish now | decoded foresight | actual panels on '
                           '/dial/foresight/image (true/false; empty: on with the sim)'),
    ('surprise', 'true', 'start the surprise monitor (foresight vs the frame that came)'),
]
# argument -> (nodes, parameter, type, description): not given = the parameter file's value
OVERRIDES = {
    'checkpoint': (MODEL_NODES, 'checkpoint', str,
                   f"DIAL checkpoint folder ('{UNTRAINED}': an untrained tiny model, sim only)"),
    'embodiment': (MODEL_NODES + ('recorder',), 'embodiment', str,
                   'embodiment config name (config/embodiments/<name>.yaml)'),
    'instruction': (('intent',), 'instruction', str, 'initial language instruction'),
    'control_rate_hz': (('controller',), 'control_rate_hz', int,
                        'joint command stream rate, up to 1000 Hz'),
    'record_dir': (('recorder',), 'output_dir', str,
                   'folder of the recorded episodes (one rosbag2 each)'),
    'autostart': (MODEL_NODES, 'autostart', bool,
                  'configure and activate the model nodes at start-up (true/false)'),
    'episode_timeout_s': (('episodes',), 'episode_timeout_s', float,
                          'episodes:=true: an episode without success ends after this long'),
    'run_dir': (('episodes',), 'run_dir', str,
                'episodes:=true: the videos go to <run_dir>/<YYYYmmdd-HHMMSS>/'),
}


def _flag(name, text):
    if text.strip().lower() in ('true', '1'):
        return True
    if text.strip().lower() in ('false', '0'):
        return False
    raise ValueError(f"launch argument {name}:={text!r} must be true or false")


def _typed(name, kind, text):
    if kind is bool:
        return _flag(name, text)
    if kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            what = 'an integer' if kind is int else 'a number'
            raise ValueError(f'launch argument {name}:={text!r} must be {what}') from None
    return ParameterValue(text, value_type=str)  # strings stay strings (no YAML typing)


def _file_value(params, node, name):
    """``node``'s ``name`` in a parameter file ({node: {ros__parameters: ...}}), or None."""
    for key in (node, '/' + node, '/**'):
        section = (params.get(key) or {}).get('ros__parameters') or {}
        if name in section:
            return section[name]
    return None


def _nodes(context):
    given = {name: context.launch_configurations.get(name, '') for name in OVERRIDES}
    config = context.launch_configurations['config']
    sim = _flag('sim', context.launch_configurations['sim'])
    driver = context.launch_configurations['driver']
    record = _flag('record', context.launch_configurations['record'])
    episodes = _flag('episodes', context.launch_configurations.get('episodes', 'false'))
    try:
        with open(config) as stream:
            params = yaml.safe_load(stream) or {}
    except OSError as err:
        raise RuntimeError(f'config:={config}: cannot read the parameter file ({err})') from None

    def effective(name, node):
        return given[name] or _file_value(params, node, OVERRIDES[name][1])
    checkpoint = effective('checkpoint', 'controller') or ''
    if not sim and driver in ('policy', 'dagger') and checkpoint == UNTRAINED:
        raise RuntimeError(
            f"refusing checkpoint '{UNTRAINED}' with sim:=false: an untrained model's actions "
            'would go to a real robot; give a trained checkpoint folder, or leave checkpoint '
            'empty for the bundled one')
    extra = {node: {} for node in ('sim', 'expert', 'recorder', 'episodes') + MODEL_NODES}
    for name, (nodes, parameter, kind, _) in OVERRIDES.items():
        if given[name]:
            for node in nodes:
                extra[node][parameter] = _typed(name, kind, given[name])
    extra['controller']['simulated'] = sim
    # the recorder tags episodes with what the robot is told (the intent's instruction)
    instruction = effective('instruction', 'intent')
    if instruction:
        extra['recorder']['instruction'] = ParameterValue(str(instruction), value_type=str)
    extra['recorder']['follow_expert'] = driver in ('expert', 'dagger')
    if driver == 'dagger':   # the expert as the controller's teleop source (nodes/takeover.py)
        extra['expert'].update(teleop=True, take_over=True)
        if not _file_value(params, 'expert', 'takeover_delay_max_s'):
            extra['expert'].update(takeover_delay_min_s=1.0, takeover_delay_max_s=8.0)
        extra['recorder']['source'] = 'policy'   # 'intervention' once the expert drove

    def parameters(node):
        return [config, extra[node]] if extra[node] else [config]
    actions = [LogInfo(msg=f'dial_ros: sim={sim} driver={driver} checkpoint='
                           f"{checkpoint or '(bundled)'} control_rate_hz="
                           f"{effective('control_rate_hz', 'controller')} config={config}")]
    if sim:
        actions.append(Node(package='dial_ros', executable='sim', name='sim', output='screen',
                            parameters=parameters('sim')))
    actions += [
        LifecycleNode(package='dial_ros', executable='perception', name='perception',
                      namespace='', output='screen', parameters=parameters('perception')),
        LifecycleNode(package='dial_ros', executable='intent', name='intent', namespace='',
                      output='screen', parameters=parameters('intent')),
    ]
    if driver in ('policy', 'dagger'):
        actions.append(LifecycleNode(package='dial_ros', executable='controller',
                                     name='controller', namespace='', output='screen',
                                     parameters=parameters('controller')))
    if driver in ('expert', 'dagger'):
        actions.append(Node(package='dial_ros', executable='expert', name='expert',
                            output='screen', parameters=parameters('expert')))
    if record:
        actions.append(Node(package='dial_ros', executable='recorder', name='recorder',
                            output='screen', parameters=parameters('recorder')))
    # episodes one after another (reset, release, judge), a line and an MP4 each
    if episodes and sim and driver == 'policy':
        actions.append(Node(package='dial_ros', executable='episodes', name='episodes',
                            output='screen', parameters=parameters('episodes')))
    actions += _foresight_view(context, sim, config, given['checkpoint']
                               or _file_value(params, 'foresight_view', 'checkpoint')
                               or checkpoint)
    if _flag('surprise', context.launch_configurations.get('surprise', 'true')):  # cheap
        actions.append(Node(package='dial_ros', executable='surprise', name='surprise',
                            output='screen', parameters=[config]))
    return actions


def _foresight_view(context, sim, config, checkpoint):
    """The foresight panel node: on with the sim when the checkpoint has a decoder, else asked.

    ``checkpoint``: the argument, else the node's own in the file, else the model nodes'.
    """
    text = context.launch_configurations.get('foresight_view', '')
    if text.strip():
        wanted = _flag('foresight_view', text)
    else:   # '' is the bundled checkpoint, which ships its decoder
        wanted = sim and checkpoint != UNTRAINED and (
            not checkpoint or os.path.isfile(os.path.join(checkpoint, DECODER)))
    if not wanted:
        return []
    extra = {'checkpoint': ParameterValue(checkpoint, value_type=str)} if checkpoint else {}
    return [Node(package='dial_ros', executable='foresight_view', name='foresight_view',
                 output='screen', parameters=[config, extra] if extra else [config])]


def generate_launch_description():
    drivers = {'choices': ['policy', 'expert', 'dagger']}
    args = [DeclareLaunchArgument(name, default_value=default, description=text,
                                  **(drivers if name == 'driver' else {}))
            for name, default, text in ARGUMENTS]
    args += [DeclareLaunchArgument(name, default_value='',
                                   description=text + ' (not given: the parameter file)')
             for name, (_, _, _, text) in OVERRIDES.items()]
    return LaunchDescription(args + [
        OpaqueFunction(function=_nodes),
        TimerAction(period=LaunchConfiguration('duration'),
                    actions=[Shutdown(reason='duration elapsed')],
                    condition=IfCondition(PythonExpression(
                        [LaunchConfiguration('duration'), ' > 0']))),
    ])
