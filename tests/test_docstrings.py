"""The examples in the docstrings run and print what they claim."""

import doctest
import importlib
import pkgutil

import pytest

import implicit_bias

MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(implicit_bias.__path__, "implicit_bias.")
    if not info.name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
