"""DIAL on a humanoid: perception, System-2 intent, System-1 controller, optional sim/recorder.

    ros2 launch dial_ros humanoid.launch.py                     # embedded GR1 sim (default)
    ros2 launch dial_ros humanoid.launch.py sim:=false          # a real robot (ros2_control)
    ros2 launch dial_ros humanoid.launch.py driver:=expert record:=true   # record demos

Written against the standard launch / launch_ros API. Where `ros2 launch` is missing, the
project's runner executes this same file: `.venv/bin/dial-ros-launch humanoid.launch.py`.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, Shutdown, TimerAction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution, PythonExpression
from launch_ros.actions import LifecycleNode, Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

ARGUMENTS = [
    ('sim', 'true', 'run the embedded simulated GR1 humanoid (false: a robot is attached)'),
    ('config', PathJoinSubstitution([FindPackageShare('dial_ros'), 'config', 'humanoid.yaml']),
     'parameter file with one section per node'),
    ('checkpoint', '', 'DIAL checkpoint folder ("" = the bundled one, else an untrained tiny '
                       'model)'),
    ('embodiment', 'gr1_sim', 'embodiment config name (config/embodiments/<name>.yaml)'),
    ('instruction', 'pick up the cube and lift it', 'initial language instruction'),
    ('control_rate_hz', '200', 'joint command stream rate, up to 1000 Hz'),
    ('driver', 'policy', 'who commands the joints: policy (DIAL controller) or expert (the '
                         'scripted IK expert, sim only)'),
    ('record', 'false', 'start the demo recorder'),
    ('record_dir', '~/dial_ros_demos', 'folder of the recorded episodes (one rosbag2 each)'),
    ('duration', '0', 'stop everything after this many seconds (0 = run until Ctrl-C)'),
]


def generate_launch_description():
    args = [DeclareLaunchArgument(name, default_value=default, description=text)
            for name, default, text in ARGUMENTS]
    config = LaunchConfiguration('config')

    def text(name):  # strings stay strings (no YAML typing of e.g. 'a: b')
        return ParameterValue(LaunchConfiguration(name), value_type=str)
    model = {'checkpoint': text('checkpoint'), 'embodiment': text('embodiment')}
    policy = PythonExpression(["'", LaunchConfiguration('driver'), "' == 'policy'"])
    expert = PythonExpression(["'", LaunchConfiguration('driver'), "' == 'expert'"])
    return LaunchDescription(args + [
        LogInfo(msg=['dial_ros: sim=', LaunchConfiguration('sim'), ' driver=',
                     LaunchConfiguration('driver'), ' control_rate_hz=',
                     LaunchConfiguration('control_rate_hz')]),
        Node(package='dial_ros', executable='sim', name='sim', output='screen',
             parameters=[config], condition=IfCondition(LaunchConfiguration('sim'))),
        LifecycleNode(package='dial_ros', executable='perception', name='perception',
                      namespace='', output='screen', parameters=[config, model]),
        LifecycleNode(package='dial_ros', executable='intent', name='intent', namespace='',
                      output='screen',
                      parameters=[config, model,
                                  {'instruction': text('instruction')}]),
        LifecycleNode(package='dial_ros', executable='controller', name='controller',
                      namespace='', output='screen',
                      parameters=[config, model,
                                  {'control_rate_hz': LaunchConfiguration('control_rate_hz')}],
                      condition=IfCondition(policy)),
        Node(package='dial_ros', executable='expert', name='expert', output='screen',
             parameters=[config], condition=IfCondition(expert)),
        Node(package='dial_ros', executable='recorder', name='recorder', output='screen',
             parameters=[config, {'output_dir': text('record_dir'), 'follow_expert': expert,
                                  'instruction': text('instruction'),
                                  'embodiment': text('embodiment')}],
             condition=IfCondition(LaunchConfiguration('record'))),
        TimerAction(period=LaunchConfiguration('duration'),
                    actions=[Shutdown(reason='duration elapsed')],
                    condition=IfCondition(PythonExpression(
                        [LaunchConfiguration('duration'), ' > 0']))),
    ])
