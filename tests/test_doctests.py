"""The ``>>>`` examples of the docstrings run as written (doctest), one test per module that
has any, so that an example cannot drift from the code it shows."""
import doctest
import importlib
import importlib.util
import pkgutil
from pathlib import Path

import pytest

PACKAGES = ('mbgraph', 'mbgraph_seq', 'benchmarks')


def _modules_with_examples():
    for package in PACKAGES:
        spec = importlib.util.find_spec(package)
        names = [package] + [info.name for info in pkgutil.walk_packages(
            spec.submodule_search_locations, package + '.')]
        for name in names:
            if name.rsplit('.', 1)[-1] == '__main__':     # running it is the command itself
                continue
            origin = importlib.util.find_spec(name).origin
            if origin and '>>>' in Path(origin).read_text(encoding='utf-8'):
                yield name


MODULES = sorted(_modules_with_examples())


def test_the_examples_are_found():
    assert {'mbgraph.pipeline', 'mbgraph.validation', 'mbgraph.data.datasets'} <= set(MODULES)


@pytest.mark.parametrize('name', MODULES)
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)              # an example that writes files writes them here
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                             raise_on_error=False, report=True, verbose=False)
    assert result.failed == 0, f'{result.failed} of {result.attempted} examples of {name} failed'
