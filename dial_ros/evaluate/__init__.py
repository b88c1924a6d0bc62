"""Closed-loop evaluation through the ROS 2 stack: splits, episodes, success statistics."""
