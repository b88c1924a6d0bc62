"""One schema per setting: dataclass fields that carry their description, range and choices.

Every other form of a setting (YAML file, ROS parameter, launch argument, CLI flag) is a view
of these fields, so a range or description lives in exactly one place.
"""
import dataclasses
import math
import typing


def setting(default, description, low=None, high=None, choices=None, unit='', read_only=False):
    """Declare a dataclass field with the metadata a parameter descriptor needs."""
    meta = {'description': description, 'low': low, 'high': high, 'choices': choices,
            'unit': unit, 'read_only': read_only}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def described_fields(cls_or_obj):
    """Yield (field, metadata) for every field declared with :func:`setting`."""
    for f in dataclasses.fields(cls_or_obj):
        if 'description' in f.metadata:
            yield f, f.metadata


def validate(obj, prefix=''):
    """Check every described field of ``obj`` against its type, range and choices.

    Raises ValueError naming the field (with ``prefix`` for nested configs).
    """
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        name = prefix + f.name
        if dataclasses.is_dataclass(value):
            validate(value, name + '.')
            continue
        meta = f.metadata
        if 'description' not in meta:
            continue
        hint = hints.get(f.name)
        if hint is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
            setattr(obj, f.name, value)
        if hint in (int, float, bool, str) and not isinstance(value, hint):
            raise ValueError(f'{name}: expected {hint.__name__}, got {value!r}')
        if hint is int and isinstance(value, bool):
            raise ValueError(f'{name}: expected int, got {value!r}')
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f'{name}: must be finite, got {value!r}')
        if meta['choices'] is not None and value not in meta['choices']:
            raise ValueError(f'{name}: {value!r} is not one of {list(meta["choices"])}')
        if meta['low'] is not None and value < meta['low']:
            raise ValueError(f'{name}: {value!r} is below its minimum {meta["low"]}')
        if meta['high'] is not None and value > meta['high']:
            raise ValueError(f'{name}: {value!r} is above its maximum {meta["high"]}')


def from_dict(cls, data, prefix=''):
    """Build a (nested) dataclass from a plain dict; unknown keys raise ValueError."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f'{prefix or cls.__name__}: expected a mapping, '
                         f'got {type(data).__name__}')
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f'{prefix}{unknown[0]}: unknown setting (known: {sorted(names)})')
    kwargs = {}
    for key, value in data.items():
        hint = hints.get(key)
        if dataclasses.is_dataclass(hint):
            kwargs[key] = from_dict(hint, value, prefix + key + '.')
        else:
            kwargs[key] = value
    obj = cls(**kwargs)
    validate(obj, prefix)
    return obj


def to_dict(obj):
    """Plain-dict view of a (nested) dataclass, suitable for YAML/JSON."""
    return dataclasses.asdict(obj)
