"""Stand-ins for the subset of ``launch`` / ``launch_ros`` that dial_ros launch files use.

:func:`install` registers them in ``sys.modules`` (``launch``, ``launch.actions``,
``launch.substitutions``, ``launch.conditions``, ``launch.utilities``, ``launch_ros``,
``launch_ros.actions``, ``launch_ros.substitutions``, ``launch_ros.parameter_descriptions``)
so that a launch file written against the real API imports them unchanged. Names, keyword
arguments and semantics follow the real libraries. This module holds the context,
substitutions and conditions; :mod:`.shim_actions` the core actions; :mod:`.shim_ros` the
process actions (``ExecuteProcess``, ``Node``, ...), ``FindPackageShare`` and
``ParameterValue``. Actions that need time or processes call the runner through
``LaunchContext.service`` (:class:`.service.ShimLaunchService`).
"""
import ast
import collections
import math
import os
import sys
import types

LOGGER_PREFIX = 'dial_ros.launch_runner.'
SHIM_MARKER = '__dial_ros_launch_shim__'
_TRUE, _FALSE = ('true', '1'), ('false', '0')


class SubstitutionFailure(RuntimeError):
    """A substitution could not be performed (missing configuration or variable)."""


class InvalidConditionExpressionError(ValueError):
    """A condition expression did not evaluate to 'true', 'false', '1' or '0'."""


class LaunchContext:
    """What actions see while they run: configurations, environment, locals, the runner."""

    def __init__(self, service=None, argv=()):
        self.service = service
        self.argv = list(argv)
        self.launch_configurations = {}
        # Writes (SetEnvironmentVariable) land in the first map; reads fall through to the
        # process environment, so os.environ edits made by the launch file are seen too.
        self.environment = collections.ChainMap({}, os.environ)
        self.locals = types.SimpleNamespace()

    @property
    def is_shutdown(self):
        return bool(self.service is not None and self.service.is_shutdown)

    def perform_substitution(self, substitution):
        return substitution.perform(self)

    def extend_locals(self, new_locals):
        vars(self.locals).update(new_locals)

    def get_locals_as_dict(self):
        return dict(vars(self.locals))

    def scoped(self, forwarding=True):
        """Return a child context whose configuration/environment edits stay inside it."""
        child = LaunchContext(self.service, self.argv)
        if forwarding:
            child.launch_configurations = dict(self.launch_configurations)
        child.environment = self.environment.new_child()
        child.locals = types.SimpleNamespace(**vars(self.locals))
        return child


# -- substitutions -------------------------------------------------------------------------

class Substitution:
    """Base class: a value computed from the context when an action runs."""

    def perform(self, context):
        raise NotImplementedError

    def describe(self):
        return f'{type(self).__name__}(...)'


def normalize_to_list_of_substitutions(subs):
    """Turn a string, substitution or mixed iterable of both into a list of substitutions."""
    if isinstance(subs, (str, Substitution, int, float)):
        subs = [subs]
    result = []
    for sub in subs:
        if isinstance(sub, Substitution):
            result.append(sub)
        elif isinstance(sub, (str, int, float, os.PathLike)):
            result.append(TextSubstitution(text=os.fspath(sub) if isinstance(
                sub, os.PathLike) else str(sub)))
        else:
            raise TypeError(f'expected str or Substitution, got {sub!r}')
    return result


def perform_substitutions(context, subs):
    """Perform each substitution and concatenate the results."""
    return ''.join(context.perform_substitution(sub)
                   for sub in normalize_to_list_of_substitutions(subs))


def describe(subs):
    return ' + '.join(sub.describe() for sub in normalize_to_list_of_substitutions(subs))


class TextSubstitution(Substitution):
    """A literal string."""

    def __init__(self, *, text):
        self.text = str(text)

    def perform(self, context):
        return self.text

    def describe(self):
        return repr(self.text)


class LaunchConfiguration(Substitution):
    """The value of a launch argument / configuration, or ``default`` when it is unset."""

    def __init__(self, variable_name, *, default=None):
        self.variable_name = normalize_to_list_of_substitutions(variable_name)
        self.default = None if default is None else normalize_to_list_of_substitutions(default)

    def perform(self, context):
        name = perform_substitutions(context, self.variable_name)
        if name in context.launch_configurations:
            return context.launch_configurations[name]
        if self.default is not None:
            return perform_substitutions(context, self.default)
        raise SubstitutionFailure(f"launch configuration '{name}' does not exist")

    def describe(self):
        return f"LaunchConfig({describe(self.variable_name)})"


class EnvironmentVariable(Substitution):
    """An environment variable of the launch context; fails when unset without a default."""

    def __init__(self, name, *, default_value=None):
        self.name = normalize_to_list_of_substitutions(name)
        self.default_value = (None if default_value is None
                              else normalize_to_list_of_substitutions(default_value))

    def perform(self, context):
        name = perform_substitutions(context, self.name)
        value = context.environment.get(name)
        if value is None and self.default_value is not None:
            value = perform_substitutions(context, self.default_value)
        if value is None:
            raise SubstitutionFailure(f"environment variable '{name}' does not exist")
        return value

    def describe(self):
        return f'EnvVar({describe(self.name)})'


class PathJoinSubstitution(Substitution):
    """``os.path.join`` of the performed parts (each part may itself be a list)."""

    def __init__(self, substitutions):
        self.parts = [normalize_to_list_of_substitutions(part) for part in substitutions]

    def perform(self, context):
        return os.path.join(*[perform_substitutions(context, part) for part in self.parts])

    def describe(self):
        return 'PathJoin(' + ', '.join(describe(part) for part in self.parts) + ')'


class ThisLaunchFileDir(Substitution):
    """The directory of the launch file being run."""

    def perform(self, context):
        value = context.get_locals_as_dict().get('current_launch_file_directory')
        if value is None:
            raise SubstitutionFailure('ThisLaunchFileDir used outside of a launch file')
        return value

    def describe(self):
        return 'ThisLaunchFileDir()'


_SAFE_NAMES = {name: getattr(math, name) for name in dir(math) if not name.startswith('_')}
_SAFE_NAMES.update(math=math, abs=abs, min=min, max=max, round=round, int=int, float=float,
                   str=str, bool=bool, len=len)
_BANNED_ATTRS = ('format', 'format_map')


def safe_eval(expression):
    """Evaluate a small Python expression: literals, operators, math and a few builtins."""
    tree = ast.parse(expression.strip(), mode='eval')
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and (
                node.attr.startswith('_') or node.attr in _BANNED_ATTRS):
            raise ValueError(f"attribute '{node.attr}' is not allowed in {expression!r}")
        if isinstance(node, ast.Name) and node.id not in _SAFE_NAMES:
            raise ValueError(f"name '{node.id}' is not allowed in {expression!r}")
        if isinstance(node, (ast.Lambda, ast.comprehension, ast.NamedExpr)):
            raise ValueError(f'{type(node).__name__} is not allowed in {expression!r}')
    code = compile(tree, '<PythonExpression>', 'eval')
    return eval(code, {'__builtins__': {}}, dict(_SAFE_NAMES))  # noqa: S307 (checked above)


class PythonExpression(Substitution):
    """``str()`` of a restricted Python evaluation of the concatenated parts."""

    def __init__(self, expression):
        self.expression = normalize_to_list_of_substitutions(expression)

    def perform(self, context):
        text = perform_substitutions(context, self.expression)
        try:
            return str(safe_eval(text))
        except Exception as exc:
            raise SubstitutionFailure(f'PythonExpression {text!r} failed: {exc}') from exc

    def describe(self):
        return f'PythonExpr({describe(self.expression)})'


# -- conditions ----------------------------------------------------------------------------

def evaluate_condition_expression(context, expression):
    """Map 'true'/'1' to True and 'false'/'0' to False (case-insensitive); else raise."""
    text = perform_substitutions(context, expression)
    if text.strip().lower() in _TRUE:
        return True
    if text.strip().lower() in _FALSE:
        return False
    raise InvalidConditionExpressionError(
        f"Unexpected string for condition expression {describe(expression)}: {text!r}; "
        "expected 'true', 'false', '1' or '0' (case-insensitive)")


class IfCondition:
    """True when the expression evaluates to 'true' or '1'."""

    def __init__(self, predicate_expression):
        self.expression = normalize_to_list_of_substitutions(predicate_expression)

    def evaluate(self, context):
        return evaluate_condition_expression(context, self.expression)


class UnlessCondition(IfCondition):
    """True when the expression evaluates to 'false' or '0'."""

    def evaluate(self, context):
        return not evaluate_condition_expression(context, self.expression)


def _module(name, package=False, **attrs):
    module = types.ModuleType(name, f'dial_ros stand-in for {name}')
    module.__dict__.update(attrs)
    setattr(module, SHIM_MARKER, True)
    if package:
        module.__path__ = []
    sys.modules[name] = module
    return module


def install():
    """Register the stand-ins as ``launch`` / ``launch_ros`` in ``sys.modules``."""
    from . import shim_actions as act, shim_ros as ros
    launch = _module('launch', True, LaunchDescription=act.LaunchDescription,
                     LaunchContext=LaunchContext, Action=act.Action, Substitution=Substitution)
    launch.actions = _module(
        'launch.actions', DeclareLaunchArgument=act.DeclareLaunchArgument, LogInfo=act.LogInfo,
        TimerAction=act.TimerAction, Shutdown=act.Shutdown, GroupAction=act.GroupAction,
        SetEnvironmentVariable=act.SetEnvironmentVariable, OpaqueFunction=act.OpaqueFunction,
        SetLaunchConfiguration=act.SetLaunchConfiguration, ExecuteProcess=ros.ExecuteProcess)
    launch.substitutions = _module(
        'launch.substitutions', LaunchConfiguration=LaunchConfiguration,
        PythonExpression=PythonExpression, TextSubstitution=TextSubstitution,
        PathJoinSubstitution=PathJoinSubstitution, EnvironmentVariable=EnvironmentVariable,
        ThisLaunchFileDir=ThisLaunchFileDir, SubstitutionFailure=SubstitutionFailure)
    launch.conditions = _module(
        'launch.conditions', IfCondition=IfCondition, UnlessCondition=UnlessCondition,
        InvalidConditionExpressionError=InvalidConditionExpressionError,
        evaluate_condition_expression=evaluate_condition_expression)
    launch.utilities = _module(
        'launch.utilities', perform_substitutions=perform_substitutions,
        normalize_to_list_of_substitutions=normalize_to_list_of_substitutions)
    launch_ros = _module('launch_ros', True)
    launch_ros.actions = _module('launch_ros.actions', Node=ros.Node,
                                 LifecycleNode=ros.LifecycleNode,
                                 PushRosNamespace=ros.PushRosNamespace)
    launch_ros.substitutions = _module('launch_ros.substitutions',
                                       FindPackageShare=ros.FindPackageShare)
    launch_ros.parameter_descriptions = _module('launch_ros.parameter_descriptions',
                                                ParameterValue=ros.ParameterValue)
