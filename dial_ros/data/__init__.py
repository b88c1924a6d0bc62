"""Recorded episodes (rosbag2) -> LeRobot v3.0 datasets -> training samples for DIAL.

- ``bag``: read one episode's rosbag2 directory with ``rosbags`` (no rclpy).
- ``align``: resample an episode onto the camera clock at a fixed rate.
- ``lerobot``: write the LeRobot v3.0 layout (parquet + mp4 + meta).
- ``convert``: the command line, ``python -m dial_ros.data.convert``.
- ``dataset``: ``DialDataset``, ``collate`` and ``mixed_sampler`` for training.
"""
