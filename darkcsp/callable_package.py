"""A package that is also a function: ``darkcsp.evaluate(...)`` and ``darkcsp.train(...)``.

``darkcsp.evaluate`` and ``darkcsp.train`` are subpackages (``import darkcsp.evaluate.darknet_map``,
``from darkcsp.train import TrainConfig``) and, called, the library entry points behind ``darkcsp
map`` and ``darkcsp train``. The package module's class becomes a ``ModuleType`` subclass with a
``__call__`` (and the function's signature), so every dotted path keeps working.
"""
from __future__ import annotations

import importlib
import inspect
import sys
import types
from typing import Any, Callable, Sequence


def callable_package(name: str, target: str, function: str,
                     lazy: Sequence[str] = ()) -> Callable[[str], Any]:
    """Make the package ``name`` callable as ``target.function`` (``target`` imported on the
    first call) and return a module ``__getattr__`` that imports ``target`` on first access
    to one of the ``lazy`` names."""

    def resolve() -> Callable[..., Any]:
        return getattr(importlib.import_module(target), function)

    class CallablePackage(types.ModuleType):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return resolve()(*args, **kwargs)

        @property
        def __signature__(self) -> inspect.Signature:
            return inspect.signature(resolve())

    sys.modules[name].__class__ = CallablePackage

    def __getattr__(attr: str) -> Any:
        if attr in lazy:
            return getattr(importlib.import_module(target), attr)
        raise AttributeError(f"module {name!r} has no attribute {attr!r}")

    return __getattr__


__all__ = ["callable_package"]
