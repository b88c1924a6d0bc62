"""Stand-ins for ``launch.actions.ExecuteProcess`` and ``launch_ros`` (see shim.py).

How a ``Node`` executable is found: ``<prefix>/lib/<package>/<executable>`` (the ament prefix
of the package, then ``sys.prefix``), else the module ``<package>.nodes.<executable>`` run as
``python -m``. Runner extension: when that fails, or there is no ``package``, ``executable`` may
name a file, absolute or relative to the launch file's directory (``*.py`` files run with the
runner's interpreter); a bare name without a package is looked up on ``PATH``.
"""
from collections.abc import Mapping
import importlib.util
import itertools
import logging
import os
import re
import shutil
import sys
import tempfile
import types

import yaml

from .shim import (evaluate_condition_expression, LaunchConfiguration, LOGGER_PREFIX,
                   normalize_to_list_of_substitutions, perform_substitutions, Substitution,
                   SubstitutionFailure)
from .shim_actions import Action, visit_entities

logger = logging.getLogger(LOGGER_PREFIX + 'launch')
_process_numbers = itertools.count(1)


class PackageNotFoundError(LookupError):
    """No share directory or executables could be found for a package."""


def _ament_prefix(package):
    try:
        from ament_index_python.packages import get_package_prefix
        return get_package_prefix(package)
    except Exception:  # not installed, AMENT_PREFIX_PATH unset, or package not indexed
        return None


def _package_dirs(package):
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return []
    return list(spec.submodule_search_locations or []) if spec else []


def _source_checkout(package):
    """Return the root of a source checkout: the package dir's parent with a package.xml."""
    for location in _package_dirs(package):
        root = os.path.dirname(os.path.abspath(location))
        xml = os.path.join(root, 'package.xml')
        if os.path.isfile(xml):
            with open(xml, encoding='utf-8') as stream:
                if re.search(rf'<name>\s*{re.escape(package)}\s*</name>', stream.read()):
                    return root
    return None


def find_package_share(package):
    """Return the share directory: ament index, else source checkout root, else sys.prefix."""
    prefix = _ament_prefix(package)
    if prefix is not None:
        return os.path.join(prefix, 'share', package)
    root = _source_checkout(package)
    if root is not None:
        return root
    share = os.path.join(sys.prefix, 'share', package)
    if os.path.isdir(share):
        return share
    raise PackageNotFoundError(
        f"package '{package}' not found: not in the ament index (AMENT_PREFIX_PATH), "
        f'not an importable source checkout with a package.xml, and no {share}')


def node_command(package, executable, launch_dir=None):
    """Return the command (list) that runs ``executable`` (see the module docstring)."""
    if package:
        for prefix in filter(None, (_ament_prefix(package), sys.prefix)):
            candidate = os.path.join(prefix, 'lib', package, executable)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return [candidate]
        for location in _package_dirs(package):
            base = os.path.join(location, 'nodes', executable)
            if os.path.isfile(base + '.py') or os.path.isfile(os.path.join(base, '__main__.py')):
                return [sys.executable, '-m', f'{package}.nodes.{executable}']
    path = os.path.join(launch_dir or os.getcwd(), executable)  # absolute paths stay as they are
    if os.path.isfile(path):
        return [sys.executable, path] if path.endswith('.py') else [path]
    if not package:
        return [shutil.which(executable) or executable]
    raise SubstitutionFailure(
        f"executable '{executable}' not found in package '{package}': no "
        f'lib/{package}/{executable} under its ament prefix or {sys.prefix}, no module '
        f'{package}.nodes.{executable}, and no file {path}')


def _uniform(values):
    return (bool(values) and type(values[0]) in (bool, int, float, str)
            and all(type(value) is type(values[0]) for value in values))


def _yaml_value(text, name='?'):
    """Type a performed substitution as launch_ros does: YAML scalars or uniform lists."""
    hint = ('; if it is meant to be a string, wrap it in launch_ros.parameter_descriptions.'
            'ParameterValue(value, value_type=str)')
    try:
        value = yaml.safe_load(text) if text else ''
    except yaml.YAMLError:
        raise TypeError(f'cannot parse the value {text!r} of parameter {name} as YAML'
                        + hint) from None
    if type(value) in (bool, int, float, str) or (isinstance(value, list) and _uniform(value)):
        return value
    raise TypeError(f'parameter {name} = {text!r} is neither a scalar nor a non-empty list of '
                    'one type (bool, int, float or str)' + hint)


class ParameterValue:
    """``launch_ros.parameter_descriptions.ParameterValue``: a value with an explicit type."""

    def __init__(self, value, *, value_type=None):
        self.value, self.value_type = value, value_type

    def evaluate(self, context, name='?'):
        value = self.value
        if isinstance(value, (Substitution, list, tuple)) and self.value_type is str:
            return perform_substitutions(context, value)
        value = evaluate_parameter_value(context, value, name)
        return value if self.value_type in (None, list) else self.value_type(value)


def evaluate_parameter_value(context, value, name='?'):
    """Evaluate a dict parameter value: plain values keep their type, substitutions go YAML."""
    if isinstance(value, ParameterValue):
        return value.evaluate(context, name)
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Substitution):
        return _yaml_value(perform_substitutions(context, value), name)
    if isinstance(value, (list, tuple)):
        if any(isinstance(item, Substitution) for item in value) and all(
                isinstance(item, (str, Substitution)) for item in value):
            return _yaml_value(perform_substitutions(context, value), name)
        items = [_yaml_value(perform_substitutions(context, item), name)
                 if isinstance(item, (list, tuple)) else
                 evaluate_parameter_value(context, item, name) for item in value]
        if {type(item) for item in items} == {int, float}:
            return [float(item) for item in items]
        if _uniform(items):
            return items
        raise TypeError(f'parameter {name} = {value!r} must be a non-empty list of one type')
    raise TypeError(f'unexpected value {value!r} for parameter {name}')


def evaluate_parameter_dict(context, parameters, prefix=''):
    """Evaluate a parameter dict; nested dicts become dotted names ('a.b')."""
    result = {}
    for key, value in parameters.items():
        name = prefix + perform_substitutions(context, key)
        if isinstance(value, Mapping):
            result.update(evaluate_parameter_dict(context, value, name + '.'))
        else:
            result[name] = evaluate_parameter_value(context, value, name)
    return result


def _subs(value):
    return None if value is None else normalize_to_list_of_substitutions(value)


class ExecuteProcess(Action):
    """Run a process; the runner prefixes its output and handles signals, respawn, on_exit."""

    def __init__(self, *, cmd=None, name=None, cwd=None, env=None, additional_env=None,
                 output='log', sigterm_timeout=LaunchConfiguration('sigterm_timeout', default=5),
                 sigkill_timeout=LaunchConfiguration('sigkill_timeout', default=5),
                 on_exit=None, respawn=False, respawn_delay=None, respawn_max_retries=-1,
                 shell=False, emulate_tty=False, log_cmd=False, **kwargs):
        super().__init__(**kwargs)
        self.cmd = [_subs(part) for part in (cmd or [])]
        self.name, self.cwd, self.output = _subs(name), _subs(cwd), _subs(output)
        self.env = None if env is None else {k: _subs(v) for k, v in env.items()}
        self.additional_env = {k: _subs(v) for k, v in (additional_env or {}).items()}
        self.sigterm_timeout, self.sigkill_timeout = _subs(sigterm_timeout), _subs(sigkill_timeout)
        self.on_exit, self.respawn, self.respawn_delay = on_exit, respawn, respawn_delay
        self.respawn_max_retries, self.shell, self.log_cmd = respawn_max_retries, shell, log_cmd

    def describe_conditional_sub_entities(self):
        exits = self.on_exit if isinstance(self.on_exit, (list, tuple)) else []
        return super().describe_conditional_sub_entities() + [('on_exit', list(exits))]

    def _command(self, context):
        return [perform_substitutions(context, part) for part in self.cmd]

    def _base_name(self, context, cmd):
        if self.name is not None:
            return perform_substitutions(context, self.name)
        return os.path.basename(cmd[0]) if cmd else 'process'

    def execute(self, context):
        if context.is_shutdown:
            return None
        cmd = self._command(context)
        if self.shell:
            cmd = ['/bin/sh', '-c', ' '.join(cmd)]
        label = f'{self._base_name(context, cmd)}-{next(_process_numbers)}'
        if self.env is not None:
            env = {perform_substitutions(context, k): perform_substitutions(context, v)
                   for k, v in self.env.items()}
        else:
            env = dict(context.environment)
        env.update({perform_substitutions(context, k): perform_substitutions(context, v)
                    for k, v in self.additional_env.items()})
        respawn = self.respawn
        if not isinstance(respawn, bool):
            respawn = evaluate_condition_expression(context, respawn)
        if self.log_cmd:
            logger.info("process details: cmd='%s'", ' '.join(cmd))
        context.service.spawn(types.SimpleNamespace(
            label=label, cmd=cmd, env=env, respawn=respawn,
            cwd=None if self.cwd is None else perform_substitutions(context, self.cwd),
            output=perform_substitutions(context, self.output),
            respawn_delay=float(self.respawn_delay or 0.0),
            respawn_max_retries=self.respawn_max_retries,
            sigterm_timeout=float(perform_substitutions(context, self.sigterm_timeout)),
            sigkill_timeout=float(perform_substitutions(context, self.sigkill_timeout)),
            on_exit=self._exit_handler(context, label, cmd)))

    def _exit_handler(self, context, label, cmd):
        if self.on_exit is None:
            return None

        def handle(returncode, pid):
            entities = self.on_exit
            if callable(entities):
                event = types.SimpleNamespace(returncode=returncode, pid=pid, name=label,
                                              cmd=cmd, action=self)
                entities = entities(event, context)
            if entities is not None:
                visit_entities(entities if isinstance(entities, (list, tuple)) else [entities],
                               context)
        return handle


class Node(ExecuteProcess):
    """``launch_ros.actions.Node``: a ROS 2 node process with name, parameters, remappings."""

    def __init__(self, *, executable, package=None, name=None, namespace=None, exec_name=None,
                 parameters=None, remappings=None, ros_arguments=None, arguments=None,
                 **kwargs):
        super().__init__(name=exec_name, **kwargs)
        self.package, self.executable = _subs(package), _subs(executable)
        self.node_name, self.node_namespace = _subs(name), _subs(namespace)
        self.parameters = list(parameters or [])
        self.remappings = [(_subs(src), _subs(dst)) for src, dst in (remappings or [])]
        self.ros_arguments = [_subs(arg) for arg in (ros_arguments or [])]
        self.arguments = [_subs(arg) for arg in (arguments or [])]

    def _namespace(self, context):
        pushed = context.launch_configurations.get('ros_namespace', '')
        if self.node_namespace is None:
            return pushed
        namespace = perform_substitutions(context, self.node_namespace)
        if namespace.startswith('/'):
            return namespace
        return '/' + '/'.join(p.strip('/') for p in (pushed, namespace) if p.strip('/'))

    def _params_file(self, context, entry):
        if isinstance(entry, Mapping):
            values = evaluate_parameter_dict(context, entry)
            handle, path = tempfile.mkstemp(prefix='launch_params_', suffix='.yaml',
                                            dir=context.service.temp_dir)
            with os.fdopen(handle, 'w') as stream:
                yaml.safe_dump({'/**': {'ros__parameters': values}}, stream,
                               default_flow_style=False)
            return path
        path = perform_substitutions(context, entry)
        if not os.path.isfile(path):
            logger.warning('Parameter file path is not a file: %s', path)
        return path

    def _command(self, context):
        package = None if self.package is None else perform_substitutions(context, self.package)
        executable = perform_substitutions(context, self.executable)
        launch_dir = context.get_locals_as_dict().get('current_launch_file_directory')
        cmd = node_command(package, executable, launch_dir)
        cmd += [perform_substitutions(context, arg) for arg in self.arguments]
        ros_args = [perform_substitutions(context, arg) for arg in self.ros_arguments]
        if self.node_name is not None:
            ros_args += ['-r', '__node:=' + perform_substitutions(context, self.node_name)]
        namespace = self._namespace(context)
        if namespace:
            ros_args += ['-r', '__ns:=' + namespace]
        for entry in self.parameters:
            ros_args += ['--params-file', self._params_file(context, entry)]
        for src, dst in self.remappings:
            ros_args += ['-r', '{}:={}'.format(perform_substitutions(context, src),
                                               perform_substitutions(context, dst))]
        return cmd + (['--ros-args'] + ros_args if ros_args else [])

    def _base_name(self, context, cmd):
        if self.name is not None:
            return perform_substitutions(context, self.name)
        if self.node_name is not None:
            return perform_substitutions(context, self.node_name)
        return os.path.basename(perform_substitutions(context, self.executable))


class LifecycleNode(Node):
    """``launch_ros.actions.LifecycleNode``: a Node with required name and namespace."""

    def __init__(self, *, name, namespace, autostart=False, **kwargs):
        super().__init__(name=name, namespace=namespace, **kwargs)
        if autostart:
            logger.warning('LifecycleNode(autostart=True) is not supported by dial-ros-launch; '
                           'the node starts unconfigured')


class PushRosNamespace(Action):
    """Prefix the namespace of the nodes launched after it (in its scope)."""

    def __init__(self, namespace, **kwargs):
        super().__init__(**kwargs)
        self.namespace = _subs(namespace)

    def execute(self, context):
        namespace = perform_substitutions(context, self.namespace)
        pushed = context.launch_configurations.get('ros_namespace', '')
        if not namespace.startswith('/'):
            namespace = '/'.join(p.strip('/') for p in (pushed, namespace) if p.strip('/'))
        context.launch_configurations['ros_namespace'] = '/' + namespace.strip('/')


class FindPackageShare(Substitution):
    """``launch_ros.substitutions.FindPackageShare``: the share directory of a package."""

    def __init__(self, package):
        self.package = normalize_to_list_of_substitutions(package)

    def perform(self, context):
        return find_package_share(perform_substitutions(context, self.package))

    def describe(self):
        return 'FindPackageShare(pkg={})'.format(
            ' + '.join(sub.describe() for sub in self.package))
