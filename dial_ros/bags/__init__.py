"""Demonstration bags: rosbag2 MCAP writer, recovery, reading, and the bag CLI.

The writer, reader and recovery (``writer``, ``reader``, ``recover``, ``metadata``,
``types``, ``episodes``) import no rclpy; the ROS adapters are the ``ros_*`` modules.
CLI: ``python -m dial_ros.bags {info,record,play,recover} ...``.
"""
from dial_ros.bags.reader import info, read_messages, scan_messages
from dial_ros.bags.recover import recover
from dial_ros.bags.writer import BagWriter, RecordingError

__all__ = ['BagWriter', 'RecordingError', 'info', 'read_messages', 'recover', 'scan_messages']
