"""The argument checks of gsp_hub.checks: ints, finite floats, booleans, choices and ``*_kwargs`` mappings."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gsp_hub.checks import check_bool, check_choice, check_float, check_int, check_kwargs


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (True, "count must be an int >= 1, got True."),
        (2.0, "count must be an int >= 1, got 2.0."),
        ("3", "count must be an int >= 1, got '3'."),
        (None, "count must be an int >= 1, got None."),
        (0, "count must be an int >= 1, got 0; pass e.g. count=1."),
    ],
)
def test_check_int_rejects_non_ints_and_out_of_range(value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        check_int("count", value, minimum=1)


def test_check_int_bounds_meaning_and_fix() -> None:
    assert check_int("k", np.int64(3), minimum=1, maximum=5) == 3 and type(check_int("k", np.int64(3))) is int
    with pytest.raises(ValueError, match=re.escape("k must be an int in [1, 5] (picks), got 7; pass e.g. k=5.")):
        check_int("k", 7, minimum=1, maximum=5, meaning="picks")
    with pytest.raises(ValueError, match=re.escape("k must be an int <= 5, got 9; ask for fewer.")):
        check_int("k", 9, maximum=5, fix="ask for fewer")


@pytest.mark.parametrize("value", [True, False, math.nan, math.inf, -math.inf, "0.5", None, [0.5]])
def test_check_float_rejects_bool_nan_inf_and_non_numbers(value: Any) -> None:
    with pytest.raises(ValueError, match=rf"^lr must be a finite number >= 0, got {re.escape(repr(value))}"):
        check_float("lr", value, minimum=0.0)


@pytest.mark.parametrize(
    ("bounds", "value", "message"),
    [
        ({"minimum": 0.0, "maximum": 1.0}, 2.0, "w must be a number in [0, 1], got 2.0; pass e.g. w=1."),
        ({"minimum": 0.0, "maximum": 1.0}, -0.5, "w must be a number in [0, 1], got -0.5; pass e.g. w=0."),
        ({"greater_than": 0.0}, 0.0, "w must be a finite number > 0, got 0.0; pass e.g. w=1."),
        ({"greater_than": 0.0, "maximum": 1.0}, 0, "w must be a number in (0, 1], got 0; pass e.g. w=0.5."),
        ({"maximum": 1e-3}, 0.5, "w must be a finite number <= 0.001, got 0.5; pass e.g. w=0.001."),
    ],
)
def test_check_float_out_of_range_names_the_bounds_and_a_fix(bounds: dict, value: float, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        check_float("w", value, **bounds)


def test_check_float_returns_a_float_and_explains_yaml_text() -> None:
    assert check_float("w", 1, minimum=0.0) == 1.0 and type(check_float("w", np.float32(0.5))) is float
    with pytest.raises(ValueError, match=re.escape("got '1e-3'; pass the number, not the text '1e-3'")):
        check_float("lr", "1e-3", minimum=0.0)


def test_check_bool_accepts_only_bools() -> None:
    assert check_bool("flag", True) is True and check_bool("flag", False) is False
    with pytest.raises(ValueError, match=re.escape("flag must be True or False, got 1; pass flag=True or flag=False.")):
        check_bool("flag", 1)
    with pytest.raises(ValueError, match=re.escape("flag must be True or False (add a branch), got 'true'; pass "
                                                   "flag=True or flag=False (YAML reads true / false, not quoted")):
        check_bool("flag", "true", meaning="add a branch")


def test_check_choice_lists_the_choices_and_the_close_ones() -> None:
    assert check_choice("head", "gmp", ("gap", "gmp")) == "gmp"
    with pytest.raises(ValueError, match=re.escape("head must be one of ['gap', 'gmp'] (pooling of the weighted map), "
                                                   "got 'gmpp' (did you mean ['gmp']?).")):
        check_choice("head", "gmpp", ("gap", "gmp"), meaning="pooling of the weighted map")
    with pytest.raises(ValueError, match=re.escape("head must be one of ['gap', 'gmp'], got None.")):
        check_choice("head", None, ("gap", "gmp"))


def _factory(dim: int, ridge: float = 0.1, *, scale: float = 1.0) -> None:
    """A factory whose caller supplies ``dim``."""


def _open_factory(dim: int, **options: Any) -> None:
    """A factory taking any keyword."""


def test_check_kwargs_accepts_keywords_of_the_factory() -> None:
    check_kwargs("pool_kwargs", {"ridge": 0.2, "scale": 2.0, "pool_size": 3}, _factory, extra=("pool_size",),
                 supplied=("dim",))
    check_kwargs("pool_kwargs", {"anything": 1}, _open_factory, supplied=("dim",))


def test_check_kwargs_unknown_key_names_it_and_the_accepted_ones() -> None:
    with pytest.raises(ValueError, match=re.escape("pool_kwargs has unknown key(s) ['rigde']; _factory accepts "
                                                   "['pool_size', 'ridge', 'scale']")):
        check_kwargs("pool_kwargs", {"rigde": 0.2}, _factory, extra=("pool_size",), supplied=("dim",))
    with pytest.raises(ValueError, match=re.escape("unknown key(s) ['dim']")):  # set by the caller
        check_kwargs("pool_kwargs", {"dim": 4}, _factory, supplied=("dim",))
    with pytest.raises(ValueError, match=re.escape("pool_kwargs must be a mapping of keyword arguments, got [1]")):
        check_kwargs("pool_kwargs", [1], _factory)


def test_checks_module_imports_no_torch() -> None:
    """The configs and the command line use these checks; loading the module alone must not pull in torch."""
    path = Path(__file__).resolve().parents[1] / "gsp_hub" / "checks.py"
    code = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('checks', sys.argv[1]); "
            "spec.loader.exec_module(importlib.util.module_from_spec(spec)); "
            "assert 'torch' not in sys.modules and 'numpy' not in sys.modules")
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)
