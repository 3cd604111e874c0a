"""pytest plugin (registered by installing unilosses): an ``xp`` fixture over the backends.

A test that takes ``xp`` runs once per installed backend, with ids ``numpy``, ``torch``, ...;
``xp`` is a :class:`unilosses.testing.Backend` (``xp.asarray``, ``xp.to_numpy``,
``xp.value_and_grad``, ``xp.xp`` the namespace).  A project's own ``xp`` fixture (in a
conftest) takes precedence.  ``--unilosses-backends torch,jax`` narrows the set.
"""

from __future__ import annotations

from typing import Any

import pytest


def pytest_addoption(parser: Any) -> None:
    parser.addoption("--unilosses-backends", default=None,
                     help="comma-separated backends for the `xp` fixture (default: installed)")


def pytest_generate_tests(metafunc: Any) -> None:
    if "xp" not in metafunc.fixturenames:
        return
    # a project's own `xp` fixture wins: only parametrise ours
    defs = metafunc._arg2fixturedefs.get("xp", ())
    if not defs or defs[-1].func is not _xp_fixture_func:
        return
    from . import installed_backends

    opt = metafunc.config.getoption("--unilosses-backends")
    names = opt.split(",") if opt else installed_backends()
    metafunc.parametrize("xp", names, ids=names, indirect=True)


def _xp(request: Any) -> Any:
    from . import Backend

    return Backend(request.param)


_xp_fixture_func = _xp
xp = pytest.fixture(name="xp")(_xp)
