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


def fastdds_profile_path():
    """Path of the project's Fast DDS profile (config/fastdds_shm.xml), or None if missing.

    Found like every data file (dial_ros.paths): the installed share/dial_ros, else the
    source checkout.
    """
    from dial_ros import paths
    try:
        return str(paths.config_file('fastdds_shm.xml'))
    except FileNotFoundError:
        return None


def apply_ros_env_defaults():
    """Keep DDS discovery on this machine unless the user asked for more.

    Default discovery multicasts out of the machine; every entry point of the project calls
    this before it creates an rclpy context. Explicit settings in the environment win.
    Also selects the project's Fast DDS profile (a 32 MiB shared-memory segment so 512 KiB
    latents go through shared memory; transports stay on this host); a profile of the user's
    own in FASTDDS_DEFAULT_PROFILES_FILE wins, and an empty value disables it.
    """
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    os.environ.setdefault('ROS_DOMAIN_ID', '77')
    if 'FASTDDS_DEFAULT_PROFILES_FILE' not in os.environ:
        profile = fastdds_profile_path()
        if profile:
            os.environ.setdefault('FASTDDS_DEFAULT_PROFILES_FILE', profile)


apply_ros_env_defaults()
