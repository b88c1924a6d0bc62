"""Middleware-free control core: stream synchronisation, chunk scheduling and safety.

Plain Python and NumPy only (no rclpy, no message packages, no torch), so the logic the ROS
nodes rely on is testable without ROS. Times are float seconds on one clock (ROS time or
sim time), supplied by the caller.
"""
