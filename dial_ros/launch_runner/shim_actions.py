"""Stand-ins for ``launch.LaunchDescription`` and the core ``launch.actions`` (see shim.py)."""
import logging

from .shim import LOGGER_PREFIX, normalize_to_list_of_substitutions, perform_substitutions


def visit_entities(entities, context):
    """Run entities in order; an entity may return more entities to run in the same context."""
    for entity in entities:
        more = entity.visit(context)
        if isinstance(more, Action):  # e.g. an OpaqueFunction returning a LaunchDescription
            more = [more]
        if more:
            visit_entities(more, context)


class Action:
    """Base action: runs ``execute`` when its condition (if any) holds."""

    def __init__(self, *, condition=None):
        self.condition = condition

    def visit(self, context):
        if self.condition is not None and not self.condition.evaluate(context):
            return None
        return self.execute(context)

    def execute(self, context):
        return None

    def get_sub_entities(self):
        return []

    def describe_sub_entities(self):
        return [] if self.condition is not None else self.get_sub_entities()

    def describe_conditional_sub_entities(self):
        return [('condition', self.get_sub_entities())] if self.condition is not None else []


class LaunchDescription(Action):
    """An ordered list of entities; ``get_launch_arguments`` finds the declared arguments."""

    def __init__(self, initial_entities=None, *, deprecated_reason=None):
        super().__init__()
        self.entities = list(initial_entities or [])

    def add_action(self, action):
        self.entities.append(action)

    add_entity = add_action

    def execute(self, context):
        return self.entities

    def get_sub_entities(self):
        return self.entities

    def get_launch_arguments(self, conditional_inclusion=False):
        found, names = [], set()

        def walk(entities, conditional):
            for entity in entities:
                if isinstance(entity, DeclareLaunchArgument):
                    entity._conditionally_included = conditional or entity.condition is not None
                    if entity.name not in names:
                        names.add(entity.name)
                        found.append(entity)
                    continue
                walk(entity.describe_sub_entities(), conditional)
                for _, subs in entity.describe_conditional_sub_entities():
                    walk(subs, True)
        walk(self.entities, False)
        if conditional_inclusion:
            return found
        return [arg for arg in found if not arg._conditionally_included]


class DeclareLaunchArgument(Action):
    """Declare a launch argument; sets the configuration from the default when not given."""

    def __init__(self, name, *, default_value=None, description=None, choices=None, **kwargs):
        super().__init__(**kwargs)
        self.name = name
        self.default_value = (None if default_value is None
                              else normalize_to_list_of_substitutions(default_value))
        self.choices = None if choices is None else list(choices)
        self._conditionally_included = False
        if self.choices is not None and not self.choices:
            raise RuntimeError('Provided choices arg is empty. Use None to ignore the choice '
                               'list.')
        if self.choices is not None and isinstance(default_value, str) \
                and default_value not in self.choices:
            raise RuntimeError(f'Provided default_value "{default_value}" is not in provided '
                               f'choices "{self.choices}".')
        if description is None:
            description = 'no description given' if choices is None else f'One of: {choices}'
        elif choices is not None:
            description += ('' if description.endswith('.') else '.') + \
                f' Valid choices are: {self.choices}'
        self.description = description

    def execute(self, context):
        if self.name not in context.launch_configurations:
            if self.default_value is None:
                raise RuntimeError(f"Required launch argument '{self.name}' (description: "
                                   f"'{self.description}') was not provided")
            context.launch_configurations[self.name] = perform_substitutions(
                context, self.default_value)
        value = context.launch_configurations[self.name]
        if self.choices is not None and value not in self.choices:
            raise RuntimeError(f"Argument '{self.name}' provided value '{value}' is not valid. "
                               f'Valid options are: {self.choices}')


class LogInfo(Action):
    """Log a message at INFO level on the 'launch.user' logger."""

    def __init__(self, *, msg, **kwargs):
        super().__init__(**kwargs)
        self.msg = normalize_to_list_of_substitutions(msg)

    def execute(self, context):
        logging.getLogger(LOGGER_PREFIX + 'launch.user').info(
            perform_substitutions(context, self.msg))


class SetEnvironmentVariable(Action):
    """Set an environment variable for the processes launched after it (in its scope)."""

    def __init__(self, name, value, **kwargs):
        super().__init__(**kwargs)
        self.name = normalize_to_list_of_substitutions(name)
        self.value = normalize_to_list_of_substitutions(value)

    def execute(self, context):
        context.environment[perform_substitutions(context, self.name)] = \
            perform_substitutions(context, self.value)


class SetLaunchConfiguration(SetEnvironmentVariable):
    """Set a launch configuration (in the current scope)."""

    def execute(self, context):
        context.launch_configurations[perform_substitutions(context, self.name)] = \
            perform_substitutions(context, self.value)


class GroupAction(Action):
    """Run actions together; ``scoped`` keeps their configuration/environment edits inside."""

    def __init__(self, actions, *, scoped=True, forwarding=True, launch_configurations=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.actions = list(actions)
        self.scoped, self.forwarding = scoped, forwarding
        self.launch_configurations = dict(launch_configurations or {})

    def get_sub_entities(self):
        return self.actions

    def execute(self, context):
        inner = context.scoped(self.forwarding) if self.scoped else context
        for name, value in self.launch_configurations.items():
            inner.launch_configurations[perform_substitutions(context, name)] = \
                perform_substitutions(context, value)
        visit_entities(self.actions, inner)


class OpaqueFunction(Action):
    """Call ``function(context, *args, **kwargs)``; it may return entities to run."""

    def __init__(self, *, function, args=None, kwargs=None, **action_kwargs):
        super().__init__(**action_kwargs)
        self.function, self.args, self.kwargs = function, list(args or []), dict(kwargs or {})

    def execute(self, context):
        return self.function(context, *self.args, **self.kwargs)


class TimerAction(Action):
    """Run actions after ``period`` seconds (a number or substitutions)."""

    def __init__(self, *, period, actions, cancel_on_shutdown=True, **kwargs):
        super().__init__(**kwargs)
        self.period = period
        self.actions = list(actions)
        self.cancel_on_shutdown = cancel_on_shutdown

    def describe_sub_entities(self):
        return []

    def describe_conditional_sub_entities(self):
        return [('timer', self.actions)]

    def execute(self, context):
        period = self.period
        if not isinstance(period, (int, float)):
            period = perform_substitutions(context, period)
        try:
            period = float(period)
        except ValueError:
            raise ValueError(f'TimerAction period {period!r} is not a number') from None
        context.service.call_later(period, lambda: visit_entities(self.actions, context))


class Shutdown(Action):
    """Shut the launch down: every process gets SIGINT, then SIGTERM/SIGKILL if needed."""

    def __init__(self, *, reason='reason not given', **kwargs):
        super().__init__(**kwargs)
        self.reason = reason

    def execute(self, context):
        context.service.shutdown(reason=perform_substitutions(context, self.reason))
