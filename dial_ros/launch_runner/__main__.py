"""``python -m dial_ros.launch_runner``: same as ``dial-ros-launch``."""
import sys

from .runner import main

sys.exit(main())
