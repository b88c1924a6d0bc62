"""``dial-ros-launch``: run a ROS 2 Python launch file where ``ros2 launch`` is missing.

Usage: ``dial-ros-launch [package] <file.launch.py> [name:=value ...] [--show-args]``. With
the real ``launch`` / ``launch_ros`` importable the file runs on ``launch.LaunchService`` (as
``ros2 launch`` does); otherwise on the stand-ins of :mod:`.shim` and the supervisor
:class:`.service.ShimLaunchService`.
"""
import argparse
import importlib
import importlib.util
import logging
import os
import sys
import traceback

from .service import ShimLaunchService
from .shim import LOGGER_PREFIX, SHIM_MARKER
from .shim_ros import find_package_share

logger = logging.getLogger(LOGGER_PREFIX + 'launch')
BUILTIN_ARGUMENTS = ('sigterm_timeout', 'sigkill_timeout')  # read by every process action


class LaunchRunnerError(Exception):
    """A user error (bad file, package or argument), reported without a traceback."""


def real_launch_available():
    """Return True when the real ``launch.actions`` and ``launch_ros.actions`` import."""
    for name in ('launch.actions', 'launch_ros.actions'):
        try:
            module = importlib.import_module(name)
        except Exception:  # missing, or an unrelated package shadowing the name
            return False
        if getattr(module, SHIM_MARKER, False):
            return False
    return True


def resolve_launch_file(package, name):
    """Return ``<share>/launch/<name>`` (or ``<share>/<name>``) of a package, or a path."""
    if package is None:
        if not os.path.isfile(name):
            raise LaunchRunnerError(f"launch file '{name}' does not exist")
        return os.path.abspath(name)
    try:
        share = find_package_share(package)
    except LookupError as exc:
        raise LaunchRunnerError(str(exc)) from None
    for candidate in (os.path.join(share, 'launch', name), os.path.join(share, name)):
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    launch_dir = os.path.join(share, 'launch')
    found = sorted(f for f in os.listdir(launch_dir) if f.endswith('.py')) \
        if os.path.isdir(launch_dir) else []
    raise LaunchRunnerError(f"file '{name}' was not found in the share directory of package "
                            f"'{package}' ({share}); launch files there: {found or 'none'}")


def load_launch_description(path):
    """Import a Python launch file and return ``generate_launch_description()``."""
    stem = os.path.basename(path).split('.')[0].replace('-', '_')
    spec = importlib.util.spec_from_file_location(f'dial_ros_launch_file_{stem}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, 'generate_launch_description'):
        raise LaunchRunnerError(f"launch file '{path}' has no generate_launch_description()")
    return module.generate_launch_description()


def _describe_default(argument):
    default = argument.default_value
    if default is None:
        return None
    return ' + '.join(sub.describe() for sub in default)


def print_arguments(arguments, stream=None):
    """Print declared arguments like ``ros2 launch --show-args``."""
    stream = stream or sys.stdout
    print("Arguments (pass arguments as '<name>:=<value>'):", file=stream)
    for argument in arguments:
        mark = '*' if getattr(argument, '_conditionally_included', False) else ''
        default = _describe_default(argument)
        print(f"\n    '{argument.name}':{mark}\n        {argument.description}\n        " +
              (f'(default: {default})' if default is not None else '(required)'), file=stream)
    if not arguments:
        print('\n  No arguments.', file=stream)
    elif any(getattr(argument, '_conditionally_included', False) for argument in arguments):
        print('\n* argument(s) which are only used if specific conditions occur', file=stream)


def check_arguments(description, given):
    """Reject undeclared arguments, missing required ones and values outside ``choices``."""
    declared = description.get_launch_arguments(conditional_inclusion=True)
    names = [argument.name for argument in declared]
    unknown = sorted(set(given) - set(names) - set(BUILTIN_ARGUMENTS))
    if unknown:
        raise LaunchRunnerError(
            f"unknown launch argument(s) {', '.join(unknown)}; declared arguments: "
            f"{', '.join(names) or 'none'} (see --show-args)")
    for argument in declared:
        choices = getattr(argument, 'choices', None)
        if argument.name in given and choices and given[argument.name] not in choices:
            raise LaunchRunnerError(f"argument '{argument.name}' got '{given[argument.name]}'; "
                                    f'valid choices are: {choices}')
        conditional = getattr(argument, '_conditionally_included', False)
        if argument.name not in given and argument.default_value is None and not conditional:
            raise LaunchRunnerError(f"required launch argument '{argument.name}' "
                                    f"({argument.description}) was not provided; pass "
                                    f'{argument.name}:=<value>')


def parse_command_line(argv):
    """Split ``[package] <file> [name:=value ...]`` and the options."""
    parser = argparse.ArgumentParser(
        prog='dial-ros-launch', usage='%(prog)s [options] [package] <file.launch.py> '
        '[name:=value ...]', description='Run a ROS 2 Python launch file like ros2 launch: '
        'a file path, or a file name in <share>/launch of the package.')
    parser.add_argument('items', nargs='+', metavar='[package] file [name:=value ...]',
                        help=argparse.SUPPRESS)
    parser.add_argument('-s', '--show-args', '--show-arguments', action='store_true',
                        help='print the arguments the launch file declares and exit')
    parser.add_argument('--sigterm-timeout', type=float, default=None,
                        help='seconds after SIGINT before SIGTERM on shutdown (default 10)')
    parser.add_argument('--sigkill-timeout', type=float, default=None,
                        help='seconds after SIGTERM before SIGKILL on shutdown (default 5)')
    parser.add_argument('-d', '--debug', action='store_true', help='debug logging')
    options = parser.parse_args(argv)
    positional = [item for item in options.items if ':=' not in item]
    options.arguments = dict(item.split(':=', 1) for item in options.items if ':=' in item)
    if not 1 <= len(positional) <= 2 or any(not name for name in options.arguments):
        parser.error('expected [package] <launch file> followed by name:=value arguments')
    options.package = positional[0] if len(positional) == 2 else None
    options.launch_file = positional[-1]
    return options


class _Formatter(logging.Formatter):
    def format(self, record):
        name = record.name[len(LOGGER_PREFIX):] if record.name.startswith(LOGGER_PREFIX) \
            else record.name
        return f'[{record.levelname}] [{name}]: {record.getMessage()}'


def _configure_logging(debug):
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_Formatter())
    root = logging.getLogger(LOGGER_PREFIX.rstrip('.'))
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    root.propagate = False


def _run_real(path, arguments, debug):
    import launch
    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import AnyLaunchDescriptionSource
    service = launch.LaunchService(argv=[f'{k}:={v}' for k, v in arguments.items()], debug=debug)
    service.include_launch_description(launch.LaunchDescription([IncludeLaunchDescription(
        AnyLaunchDescriptionSource(path), launch_arguments=list(arguments.items()))]))
    return service.run()


def main(argv=None):
    """Run ``dial-ros-launch`` (the console script) and return its exit code."""
    import dial_ros
    dial_ros.apply_ros_env_defaults()
    options = parse_command_line(sys.argv[1:] if argv is None else argv)
    _configure_logging(options.debug)
    arguments = dict(options.arguments)
    for name in BUILTIN_ARGUMENTS:
        value = getattr(options, name)
        if value is not None:
            arguments.setdefault(name, str(value))
    use_real = real_launch_available()
    if not use_real:
        from .shim import install
        install()
    try:
        path = resolve_launch_file(options.package, options.launch_file)
        try:
            description = load_launch_description(path)
        except LaunchRunnerError:
            raise
        except Exception:
            logger.error('Caught exception when loading launch file %s:\n%s', path,
                         traceback.format_exc().rstrip())
            return 1
        if options.show_args:
            print_arguments(description.get_launch_arguments(conditional_inclusion=True))
            return 0
        check_arguments(description, arguments)
    except LaunchRunnerError as exc:
        print(f'dial-ros-launch: error: {exc}', file=sys.stderr)
        return 2
    if use_real:
        return _run_real(path, arguments, options.debug)
    arguments.setdefault('sigterm_timeout', '10.0')  # a longer grace than ros2 launch's 5 s
    return ShimLaunchService(launch_file=path, arguments=arguments).run(description)
