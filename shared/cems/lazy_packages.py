"""Packages whose ``__init__`` imports far more than a Lambda function uses, made importable without it.

Importing any submodule of a package runs the package's ``__init__`` first. Some packages CEMS uses
import everything they have there: Powertools' ``event_handler`` loads every resolver (AppSync with
asyncio, Bedrock, VPC Lattice, ...) and ``utilities.data_classes`` every event class, though a
function uses one resolver and one or two event classes; line-bot-sdk's packages load its legacy v2
SDK, aiohttp and all ~200 models (see cems.line.api). On every Lambda cold start.

``install(names)`` puts those package modules into ``sys.modules`` *without running their
``__init__``*, each with its real ``__spec__`` and ``__path__``, so submodules import as usual and
only the submodules actually used are loaded. A name the ``__init__`` would have defined is resolved
on first access (PEP 562 module ``__getattr__``): from the ``from <module> import <Name>`` lines of
that very ``__init__`` when the name is listed there (``from aws_lambda_powertools.event_handler
import APIGatewayHttpResolver`` loads ``event_handler.api_gateway`` alone), else by running the real
``__init__`` into the module, so any other code in the process (the local stack runs every function
in one) sees the complete package. Behaviour is the package's; only the order of imports changes.
A package already imported is left as it is, and so are its subpackages.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
import threading
from types import ModuleType
from typing import Any

# The Powertools packages a function's init would load whole for one resolver or event class.
POWERTOOLS = ("aws_lambda_powertools.event_handler", "aws_lambda_powertools.utilities.data_classes")
lock = threading.RLock()


class _LazyPackage:
    """Module-level ``__getattr__`` of one lazily initialised package (see the module docstring)."""

    def __init__(self, module: ModuleType) -> None:
        self.module = module
        self._names: dict[str, tuple[str, str]] | None = None
        self._completed = False

    def __call__(self, name: str) -> Any:
        with lock:
            if name in self.module.__dict__:  # set meanwhile by another thread or a submodule import
                return self.module.__dict__[name]
            if name != "__all__" and not self._completed:
                source = self.names().get(name)
                if source is not None:
                    value = getattr(importlib.import_module(source[0]), source[1])
                    setattr(self.module, name, value)
                    return value
                if name.startswith("__"):  # __wrapped__, __path__ probes and the like: not ours
                    raise AttributeError(name)
                submodule = f"{self.module.__name__}.{name}"
                if importlib.util.find_spec(submodule) is not None:
                    return importlib.import_module(submodule)
            self.complete()
            try:
                return self.module.__dict__[name]
            except KeyError:
                raise AttributeError(f"module {self.module.__name__!r} has no attribute {name!r}") from None

    def names(self) -> dict[str, tuple[str, str]]:
        """Name -> (module, attribute) from the package __init__'s `from ... import ...` statements."""
        if self._names is None:
            names: dict[str, tuple[str, str]] = {}
            spec = self.module.__spec__
            origin = spec.origin if spec is not None else None
            if origin:
                with open(origin, encoding="utf-8") as file:  # noqa: PTH123 - one small file, no pathlib import
                    tree = ast.parse(file.read(), origin)
                for node in tree.body:
                    if isinstance(node, ast.ImportFrom) and node.module:
                        source = importlib.util.resolve_name(
                            "." * node.level + node.module, self.module.__name__
                        )
                        for alias in node.names:
                            names[alias.asname or alias.name] = (source, alias.name)
            self._names = names
        return self._names

    def complete(self) -> None:
        """Run the package's real __init__ into the module (what a plain import would have done)."""
        if self._completed:
            return
        self._completed = True
        spec = self.module.__spec__
        assert spec is not None and spec.loader is not None
        spec.loader.exec_module(self.module)


def install(names: tuple[str, ...]) -> None:
    """Install `names` (parents before children) as lazy packages; a name already imported, or not
    installed at all, is left alone (and so is the rest of `names`, for a package not installed)."""
    with lock:
        for name in names:
            if name in sys.modules:
                continue
            spec = importlib.util.find_spec(name)
            if spec is None or spec.loader is None or spec.submodule_search_locations is None:
                return
            module = importlib.util.module_from_spec(spec)
            module.__getattr__ = _LazyPackage(module)  # type: ignore[method-assign]
            sys.modules[name] = module
            parent, _, child = name.rpartition(".")
            if parent:
                setattr(sys.modules[parent], child, module)


def is_lazy(module_name: str) -> bool:
    """Whether a package module is (still) one of the shim's, for tests and the bench."""
    module = sys.modules.get(module_name)
    return module is not None and isinstance(module.__dict__.get("__getattr__"), _LazyPackage)
