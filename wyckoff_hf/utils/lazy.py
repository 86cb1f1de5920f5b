"""Import-time thrift: package attributes imported on first use, and a callback run when a module is imported.

``wyckoff-hf --help`` must answer in a fraction of a second, but importing torch, transformers and pymatgen
takes seconds. Packages therefore export their names lazily (PEP 562 ``__getattr__``), and the registration
with transformers' Auto classes waits until transformers itself is imported (``when_imported``).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``exports[name]`` (a submodule, relative to ``package``) on first
    access of ``name`` and caches the attribute in the package."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name], package), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__


class _Loader(importlib.abc.Loader):
    """Runs the wrapped loader between ``before()`` and ``after(succeeded)``."""

    def __init__(self, loader: importlib.abc.Loader, before: Callable[[], None],
                 after: Callable[[bool], None]) -> None:
        self.loader, self.before, self.after = loader, before, after

    def __getattr__(self, name: str) -> Any:  # get_source, get_resource_reader, is_package...
        return getattr(self.loader, name)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.before()
        succeeded = False
        try:
            self.loader.exec_module(module)
            succeeded = True
        finally:
            self.after(succeeded)


class _DeferredImportCallback(importlib.abc.MetaPathFinder):
    """Calls ``callback`` once ``trigger`` is imported and no module of ``package`` is half-imported.

    The second condition matters when one of our own modules imports the trigger: the callback (which
    imports our modules) must wait until that module has finished, or it would see it half-initialised.
    So the finder also watches our submodules, counting how many are executing.
    """

    def __init__(self, package: str, trigger: str, callback: Callable[[], None]) -> None:
        self.prefix, self.trigger, self.callback = package + ".", trigger, callback
        self.executing = 0
        self.triggered = self.done = False

    def find_spec(self, fullname: str, path: Any = None, target: ModuleType | None = None):
        if fullname == self.trigger and not self.triggered:
            before, after = (lambda: None), self._trigger_imported
        elif fullname.startswith(self.prefix):
            before, after = self._enter, self._leave
        else:
            return None
        spec = self._find_with_the_others(fullname, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader, before, after)
        return spec

    def _find_with_the_others(self, fullname: str, path: Any, target: ModuleType | None):
        for finder in sys.meta_path:
            if finder is not self and hasattr(finder, "find_spec"):
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    return spec
        return None

    def _trigger_imported(self, succeeded: bool) -> None:
        self.triggered = succeeded
        self._maybe_call()

    def _enter(self) -> None:
        self.executing += 1

    def _leave(self, succeeded: bool) -> None:
        self.executing -= 1
        self._maybe_call()

    def _maybe_call(self) -> None:
        if self.triggered and not self.executing and not self.done:
            self.done = True
            sys.meta_path.remove(self)
            self.callback()


def when_imported(package: str, trigger: str, callback: Callable[[], None]) -> None:
    """Call ``callback()`` once the top-level module ``trigger`` has been imported (now, if it already is),
    but never while a module of ``package`` is half-imported. Call it from ``package``'s ``__init__``."""
    if trigger in sys.modules:
        callback()
    else:
        sys.meta_path.insert(0, _DeferredImportCallback(package, trigger, callback))
