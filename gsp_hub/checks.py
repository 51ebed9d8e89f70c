"""Checks of user-given arguments: ints, finite floats, booleans, choices and ``*_kwargs`` mappings, with errors that
say what to do.

Every check raises ValueError naming the argument, what was expected, what was given and the fix, e.g.::

    check_int("batch_size", 0, minimum=1)
    # ValueError: batch_size must be an int >= 1, got 0; pass e.g. batch_size=1.
    check_float("lr", float("nan"), minimum=0)
    # ValueError: lr must be a finite number >= 0, got nan.
    check_choice("init", "weight_kcenter", ("memory_kcenter", "weights_kcenter"))
    # ValueError: init must be one of ['memory_kcenter', 'weights_kcenter'], got 'weight_kcenter' (did you mean
    # ['weights_kcenter']?).
    check_kwargs("zsr_kwargs", {"rigde": 0.1}, ZeroShotRegularizer, supplied=("num_classes", "embed_dim"))
    # ValueError: zsr_kwargs has unknown key(s) ['rigde']; ZeroShotRegularizer accepts ['margin', 'ridge', 'scale'].

A pure module (the standard library and the torch-free :mod:`gsp_hub.registry`), so that the configurations and the
command line can use it without importing torch.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from gsp_hub.registry import did_you_mean

__all__ = ["check_bool", "check_choice", "check_float", "check_int", "check_kwargs"]


def check_int(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None,
              meaning: str = "", fix: str = "") -> int:
    """``value`` as an int, or ValueError unless it is an integer (not a bool) in ``[minimum, maximum]``.

    Args:
        name: the argument's name as the user wrote it (``batch_size``, ``--parity-count``).
        value: what was given; Python and numpy integers pass.
        minimum, maximum: inclusive bounds (None: unbounded).
        meaning: what the value is, shown in parentheses after the expectation (e.g. ``"feature width"``).
        fix: what to do instead; default: the nearest allowed value when ``value`` is an out-of-range integer.
    """
    is_int = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if is_int and (minimum is None or value >= minimum) and (maximum is None or value <= maximum):
        return int(value)
    expected = "an int" + _bounds_text(minimum, maximum, None)
    if not fix and is_int:
        fix = f"pass e.g. {name}={_nearest_allowed(int(value), minimum, maximum, None)}"
    raise ValueError(_message(name, expected, meaning, value, fix))


def check_float(name: str, value: Any, *, minimum: float | None = None, maximum: float | None = None,
                greater_than: float | None = None, meaning: str = "", fix: str = "") -> float:
    """``value`` as a float, or ValueError unless it is a finite real number (not a bool, NaN or ±inf) within the
    bounds.

    Args:
        name: the argument's name as the user wrote it.
        value: what was given; Python ints and floats and numpy scalars pass.
        minimum, maximum: inclusive bounds (None: unbounded).
        greater_than: exclusive lower bound (e.g. 0 for a temperature).
        meaning: what the value is, shown in parentheses after the expectation.
        fix: what to do instead; default: an allowed value near ``value`` when it is a finite out-of-range number.
    """
    is_finite = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    in_range = is_finite and (minimum is None or value >= minimum) and (maximum is None or value <= maximum) \
        and (greater_than is None or value > greater_than)
    if in_range:
        return float(value)
    bounded = (minimum is not None or greater_than is not None) and maximum is not None
    expected = ("a number" if bounded else "a finite number") + _bounds_text(minimum, maximum, greater_than)
    if not fix and is_finite:
        fix = f"pass e.g. {name}={_number(_nearest_allowed(float(value), minimum, maximum, greater_than))}"
    elif not fix and isinstance(value, str) and _parses_as_float(value):
        fix = f"pass the number, not the text {value!r} (YAML reads 1e-3 as text: write 1.0e-3)"
    raise ValueError(_message(name, expected, meaning, value, fix))


def check_bool(name: str, value: Any, *, meaning: str = "") -> bool:
    """``value`` if it is a bool, else ValueError naming the argument: ``1``, ``"true"`` and None are rejected too,
    since a truthy value of another type is more often a mistake than a switch."""
    if isinstance(value, bool):
        return value
    fix = f"pass {name}=True or {name}=False" + (" (YAML reads true / false, not quoted text)"
                                                  if isinstance(value, str) else "")
    raise ValueError(_message(name, "True or False", meaning, value, fix))


def check_choice(name: str, value: Any, choices: Sequence[str], *, meaning: str = "") -> str:
    """``value`` if it is one of ``choices``, else ValueError listing them (with the close ones for a typo)."""
    if isinstance(value, str) and value in choices:
        return value
    expected = f"one of {list(choices)}" + (f" ({meaning})" if meaning else "")
    suggestion = did_you_mean(value, choices) if isinstance(value, str) else ""
    raise ValueError(f"{name} must be {expected}, got {value!r}{suggestion}.")


def check_kwargs(name: str, kwargs: Any, factory: Callable[..., Any], *, extra: Collection[str] = (),
                 supplied: Collection[str] = ()) -> None:
    """ValueError unless ``kwargs`` is a mapping whose keys are keyword parameters of ``factory``.

    Args:
        name: the argument's name (``pool_kwargs``).
        kwargs: the mapping the user gave; it will be passed as ``factory(..., **kwargs)``.
        factory: the class or function that receives ``kwargs``; one that takes ``**kwargs`` accepts any key.
        extra: keys the caller consumes itself before calling ``factory`` (accepted too).
        supplied: parameters of ``factory`` the caller sets itself (e.g. ``dim``): not accepted from the user.
    """
    if not isinstance(kwargs, Mapping):
        raise ValueError(f"{name} must be a mapping of keyword arguments, got {kwargs!r}; pass KEY=VALUE pairs "
                         f"(or a YAML mapping).")
    parameters = inspect.signature(factory).parameters.values()
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters):
        return
    keyword_kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    accepted = sorted({parameter.name for parameter in parameters
                       if parameter.kind in keyword_kinds and parameter.name not in supplied} | set(extra))
    unknown = sorted((key for key in kwargs if key not in accepted), key=str)
    if unknown:
        factory_name = getattr(factory, "__qualname__", repr(factory))
        takes = f"accepts {accepted}" if accepted else "takes no options"
        raise ValueError(f"{name} has unknown key(s) {unknown}; {factory_name} {takes}. Remove the key(s) or "
                         "correct their spelling.")


def _bounds_text(minimum: float | None, maximum: float | None, greater_than: float | None) -> str:
    """`` >= 1``, `` <= 5``, `` > 0``, `` in [0, 1]`` or `` in (0, 1]``; empty without bounds."""
    low, low_bracket = (greater_than, "(") if greater_than is not None else (minimum, "[")
    if low is not None and maximum is not None:
        return f" in {low_bracket}{_number(low)}, {_number(maximum)}]"
    if low is not None:
        return f" {'>' if greater_than is not None else '>='} {_number(low)}"
    return f" <= {_number(maximum)}" if maximum is not None else ""


def _number(value: float) -> str:
    """An int as written, a float in its shortest form (``0.5``, ``1e-05``)."""
    return str(value) if isinstance(value, int) else f"{value:g}"


def _nearest_allowed(value: float, minimum: float | None, maximum: float | None, greater_than: float | None
                     ) -> float:
    """An allowed value near ``value``: clamped to [minimum, maximum]; above an exclusive bound, halfway to the
    maximum (or the bound + 1 without a maximum)."""
    if minimum is not None:
        value = max(value, minimum)
    if maximum is not None:
        value = min(value, maximum)
    if greater_than is not None and value <= greater_than:
        value = (greater_than + maximum) / 2 if maximum is not None else greater_than + 1
    return value


def _parses_as_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _message(name: str, expected: str, meaning: str, value: Any, fix: str) -> str:
    explained = f"{expected} ({meaning})" if meaning else expected
    return f"{name} must be {explained}, got {value!r}" + (f"; {fix}." if fix else ".")
