"""QoS profiles of the dial_ros topics (names in :mod:`dial_ros.topics`); rclpy.qos only.

A module of its own so that tools (evaluation, benchmarks, tests) subscribe with the nodes'
profiles without importing the node helpers.
"""
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)

# Sensors: best effort, a few deep (a late frame is worth less than the next one).
QOS_SENSOR = qos_profile_sensor_data
# Latched configuration (the instruction): reliable + transient local, last value only.
QOS_LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL,
                         history=HistoryPolicy.KEEP_LAST)
# Latents and chunks: reliable, only the newest matters.
QOS_LATENT = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE,
                        history=HistoryPolicy.KEEP_LAST)
# Joint commands: reliable, small depth (ros2_control forward controllers use depth 10).
QOS_COMMAND = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                         history=HistoryPolicy.KEEP_LAST)
