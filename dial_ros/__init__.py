"""dial_ros: the DIAL dual-system VLA on a humanoid with ROS 2.

The core (model, training, data, sync, chunking, safety, sim) imports no rclpy; the ROS 2
adapters live in ``dial_ros.nodes``.
"""
import os
import pkgutil

# rosidl installs the generated message modules (dial_ros.msg, dial_ros.srv) as a second
# ``dial_ros`` directory in site-packages; merge it into this package.
__path__ = pkgutil.extend_path(__path__, __name__)

__version__ = '0.1.0'


def apply_ros_env_defaults():
    """Keep DDS discovery on this machine unless the user asked for more.

    Default discovery multicasts out of the machine; every entry point of the project calls
    this before it creates an rclpy context. Explicit settings in the environment win.
    """
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    os.environ.setdefault('ROS_DOMAIN_ID', '77')


apply_ros_env_defaults()
