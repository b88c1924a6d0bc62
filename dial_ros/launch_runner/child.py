"""The humanoid launch as a child process of a tool (evaluation, demo recording).

The child gets its own ROS domain (never the interactive default 77), discovery on
localhost and one torch thread per process (:mod:`dial_ros.procs`); Ctrl-C to its process
group makes the launch stop every node.
"""
import signal
import sys

import yaml

from dial_ros import paths, procs
from dial_ros.procs import ROOT  # noqa: F401  (evaluate imports it from here)


def write_params(path, overrides):
    """config/humanoid.yaml with ``{node: {parameter: value}}`` overrides, written to
    ``path`` for the launch's ``config:=`` argument; returns ``path``."""
    data = yaml.safe_load(paths.config_file('humanoid.yaml').read_text())
    for node, values in overrides.items():
        data.setdefault(node, {}).setdefault('ros__parameters', {}).update(values)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def start_launch(arguments, log_path, domain, launch_file='humanoid.launch.py'):
    """Start ``launch_file`` with ``name:=value`` ``arguments``; output goes to ``log_path``."""
    cmd = [sys.executable, '-m', 'dial_ros.launch_runner', 'dial_ros', launch_file,
           *arguments]
    return procs.start(cmd, domain, log_path)


def stop_launch(proc, timeout=30.0):
    """Ctrl-C to the whole launch (nodes finalise: the recorder closes its bag), then
    SIGTERM, then SIGKILL; returns the exit code."""
    return procs.stop(proc, signal.SIGINT, timeout)
