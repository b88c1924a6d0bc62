"""Input checks shared by the core modules: a ValueError that names the field."""
import math


def finite_number(value, field, low=None):
    """``float(value)``, finite and (optionally) >= ``low``; ValueError naming ``field``."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f'{field}: expected a number, got {value!r}') from None
    if not math.isfinite(out):
        raise ValueError(f'{field}: must be finite, got {out}')
    if low is not None and out < low:
        raise ValueError(f'{field}: must be >= {low}, got {out}')
    return out
