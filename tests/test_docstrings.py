"""Every public loss documents what a reader of optax or numpydoc expects to find."""

from __future__ import annotations

import inspect
import re

import pytest

import unilosses

NAMES = sorted(unilosses.__all__)


def _section(doc: str, title: str) -> str | None:
    m = re.search(rf"^{title}\n-+\n(.*?)(?=^\w[\w ]*\n-+\n|\Z)", doc, flags=re.M | re.S)
    return m.group(1) if m else None


@pytest.mark.parametrize("name", NAMES)
def test_docstring_sections(name):
    fn = getattr(unilosses, name)
    doc = inspect.getdoc(fn)
    assert doc, name
    for title in ("Parameters", "Returns", "Examples"):
        assert _section(doc, title) is not None, f"{name}: no {title} section"
    titles = re.findall(r"^(\w[\w ]*)\n-+\n", doc, flags=re.M)
    order = ["Parameters", "Returns", "Notes", "References", "Examples"]
    assert titles == [t for t in order if t in titles], f"{name}: sections {titles}"
    assert "Peers:" in doc, f"{name}: no line naming the framework peers"


@pytest.mark.parametrize("name", NAMES)
def test_every_parameter_is_documented(name):
    fn = getattr(unilosses, name)
    params = _section(inspect.getdoc(fn) or "", "Parameters") or ""
    # entries start at the margin: "name : type", or "a, b, c" grouped under one description
    documented = set()
    for line in params.splitlines():
        if line and not line.startswith(" "):
            documented.update(n.strip() for n in line.split(" : ")[0].split(","))
    missing = set(inspect.signature(fn).parameters) - documented
    assert not missing, f"{name}: {sorted(missing)} not in Parameters"



def test_the_doctests_outside_the_losses_run():
    # the default run collects doctests under src/unilosses/losses only; those of ops and
    # @unilosses.loss (its docstring is `help(unilosses.loss)`) never ran
    import doctest
    import importlib
    from pathlib import Path

    src = Path(unilosses.__file__).resolve().parent
    modules = [".".join(("unilosses", *f.relative_to(src).with_suffix("").parts))
               for f in sorted(src.rglob("*.py"))
               if "losses" not in f.relative_to(src).parts[:1]
               and re.search(r"^\s*>>> ", f.read_text(), flags=re.M)]
    assert {"unilosses.ops", "unilosses._core.define"} <= set(modules)
    for name in modules:
        failed, attempted = doctest.testmod(importlib.import_module(name))
        assert attempted and not failed, name
