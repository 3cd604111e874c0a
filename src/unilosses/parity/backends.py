"""Which backends the report can run here, how to install the others, and loading them.

Nothing is imported until :func:`probe` is called for a backend that the run selected.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Any

from ..backends import KNOWN_BACKENDS, Adapter, adapter_named

#: the module whose presence means the framework is installed
MODULES = {
    "numpy": "numpy",
    "array_api_strict": "array_api_strict",
    "torch": "torch",
    "jax": "jax",
    "tensorflow": "tensorflow",
}

#: what to type to get a missing backend (the extras are declared in pyproject.toml)
INSTALL = {
    "numpy": "pip install numpy",
    "array_api_strict": 'pip install "unilosses[strict]"',
    "torch": 'pip install "unilosses[torch]"',
    "jax": 'pip install "unilosses[jax]"',
    "tensorflow": 'pip install "unilosses[tensorflow]"  (or: pip install tensorflow-cpu)',
}


def is_installed(module: str) -> bool:
    """Whether ``module`` can be imported (looked up, not imported)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@dataclass
class BackendStatus:
    """A backend as the report found it."""

    name: str
    available: bool
    adapter: Adapter | None = None
    version: str | None = None
    #: "not installed" or "failed to load: ..." when not available
    reason: str | None = None
    #: the command that installs it, when it is not installed
    install: str | None = None

    @property
    def broken(self) -> bool:
        """Installed but its adapter failed to load (a failure, unlike "not installed")."""
        return not self.available and self.install is None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "available": self.available, "version": self.version,
                "reason": self.reason, "install": self.install}


def _prepare(name: str) -> None:
    """Process-wide settings a backend needs before its first array."""
    if name == "jax":
        # float64 (and int64 labels) need x64; it changes no float32 result
        import jax

        jax.config.update("jax_enable_x64", True)
    elif name == "tensorflow":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def use_jax_cache(path: str) -> None:
    """Keep JAX's compiled programs in ``path`` across runs (unless the user set a cache).

    JAX compiles each operation once per shape and dtype, 0.1-0.2 s each on a small CPU; the
    persistent cache turns the second run's compilations into file reads.
    """
    if not is_installed("jax"):
        return
    import jax

    if getattr(jax.config, "jax_compilation_cache_dir", None):
        return  # the user's own cache wins
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def probe(name: str) -> BackendStatus:
    """Find and load backend ``name``; never raises for a missing or broken framework."""
    if name not in KNOWN_BACKENDS:
        raise ValueError(f"unknown backend {name!r}; known backends: {', '.join(KNOWN_BACKENDS)}")
    module = MODULES[name]
    if not is_installed(module):
        return BackendStatus(name, False, reason="not installed", install=INSTALL[name])
    try:
        _prepare(name)
        adapter = adapter_named(name)
        mod = importlib.import_module(module)
    except Exception as exc:  # a broken install or adapter is reported, not raised
        return BackendStatus(name, False, reason=f"failed to load: {type(exc).__name__}: {exc}")
    return BackendStatus(name, True, adapter, getattr(mod, "__version__", None))


__all__ = ["BackendStatus", "INSTALL", "KNOWN_BACKENDS", "MODULES", "is_installed", "probe",
           "use_jax_cache"]
