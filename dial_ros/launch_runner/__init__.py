"""Run ROS 2 Python launch files without ``ros2 launch`` (``dial-ros-launch``).

``main`` is the console script. Launch files use the real ``launch`` / ``launch_ros`` API; when
those libraries are not installed, :mod:`.shim` provides the subset dial_ros uses.
"""
from .runner import main, real_launch_available
from .service import ShimLaunchService

__all__ = ['main', 'real_launch_available', 'ShimLaunchService']
