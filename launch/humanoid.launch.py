"""DIAL on a humanoid: perception, System-2 intent, System-1 controller, optional sim/recorder.

    ros2 launch dial_ros humanoid.launch.py                     # embedded GR1 sim (default)
    ros2 launch dial_ros humanoid.launch.py sim:=false          # a real robot (ros2_control)
    ros2 launch dial_ros humanoid.launch.py driver:=expert record:=true   # record demos

Every node setting comes from the parameter file (`config:=`, default the installed
config/humanoid.yaml); the arguments in OVERRIDES replace its value only when given on the
command line, so a copy of the file with other values works as it reads.

Written against the standard launch / launch_ros API. Where `ros2 launch` is missing, the
project's runner executes this same file: `.venv/bin/dial-ros-launch humanoid.launch.py`.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction, Shutdown, TimerAction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution, PythonExpression
from launch_ros.actions import LifecycleNode, Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare
import yaml

UNTRAINED = 'untrained'  # dial_ros.paths.UNTRAINED: the checkpoint value of an untrained model
MODEL_NODES = ('perception', 'intent', 'controller')

ARGUMENTS = [
    ('sim', 'true', 'run the embedded simulated GR1 humanoid (false: a robot is attached)'),
    ('config', PathJoinSubstitution([FindPackageShare('dial_ros'), 'config', 'humanoid.yaml']),
     'parameter file with one section per node'),
    ('driver', 'policy', 'who commands the joints: policy (DIAL controller) or expert (the '
                         'scripted IK expert, sim only)'),
    ('record', 'false', 'start the demo recorder'),
    ('duration', '0', 'stop everything after this many seconds (0 = run until Ctrl-C)'),
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
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f'launch argument {name}:={text!r} must be an integer') from None
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
    try:
        with open(config) as stream:
            params = yaml.safe_load(stream) or {}
    except OSError as err:
        raise RuntimeError(f'config:={config}: cannot read the parameter file ({err})') from None

    def effective(name, node):
        return given[name] or _file_value(params, node, OVERRIDES[name][1])
    checkpoint = effective('checkpoint', 'controller') or ''
    if not sim and driver == 'policy' and checkpoint == UNTRAINED:
        raise RuntimeError(
            f"refusing checkpoint '{UNTRAINED}' with sim:=false: an untrained model's actions "
            'would go to a real robot; give a trained checkpoint folder, or leave checkpoint '
            'empty for the bundled one')
    extra = {node: {} for node in ('sim', 'expert', 'recorder') + MODEL_NODES}
    for name, (nodes, parameter, kind, _) in OVERRIDES.items():
        if given[name]:
            for node in nodes:
                extra[node][parameter] = _typed(name, kind, given[name])
    extra['controller']['simulated'] = sim
    # the recorder tags episodes with what the robot is told (the intent's instruction)
    instruction = effective('instruction', 'intent')
    if instruction:
        extra['recorder']['instruction'] = ParameterValue(str(instruction), value_type=str)
    extra['recorder']['follow_expert'] = driver == 'expert'

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
    if driver == 'policy':
        actions.append(LifecycleNode(package='dial_ros', executable='controller',
                                     name='controller', namespace='', output='screen',
                                     parameters=parameters('controller')))
    elif driver == 'expert':
        actions.append(Node(package='dial_ros', executable='expert', name='expert',
                            output='screen', parameters=parameters('expert')))
    if record:
        actions.append(Node(package='dial_ros', executable='recorder', name='recorder',
                            output='screen', parameters=parameters('recorder')))
    if _flag('surprise', context.launch_configurations.get('surprise', 'true')):  # cheap
        actions.append(Node(package='dial_ros', executable='surprise', name='surprise',
                            output='screen', parameters=[config]))
    return actions


def generate_launch_description():
    args = [DeclareLaunchArgument(name, default_value=default, description=text,
                                  **({'choices': ['policy', 'expert']} if name == 'driver'
                                     else {}))
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
