"""Registration of hf_iqa's classes with transformers, done when it is first needed instead of at `import hf_iqa`.

Why: registering means importing the model classes, i.e. torch and transformers (seconds, hundreds of MB), which
`hf-iqa --help`, `hf-iqa list` and a plain `import hf_iqa` do not need. transformers has no plugin entry point, so
`import hf_iqa` arms two triggers instead; whichever comes first registers everything (idempotent):

1. importing `hf_iqa.models` (any model folder, `hf_iqa.load`, `hf_iqa.pipeline`, the CLI's model commands)
   registers every model folder; importing `hf_iqa.pipelines` registers the `image-quality` task;
2. the first `from transformers import Auto...` / `transformers.pipeline` after `import hf_iqa` runs `register()`
   (a one-shot module `__getattr__` on transformers' lazy top-level module, which resolves the name first; armed
   when transformers is imported, or right away when it already is).

If transformers' Auto classes or pipelines are already loaded when hf_iqa is imported, `register()` runs at once.
Importing Auto classes through transformers' submodules (`transformers.models.auto...`) bypasses trigger 2; call
`hf_iqa.register_all()` then.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType

TRANSFORMERS = "transformers"
# transformers modules whose presence means that its Auto classes or pipelines may already be in use
_AUTO_MODULES = ("transformers.models.auto.configuration_auto", "transformers.pipelines")


def register() -> None:
    """Register every model folder, mPLUG-Owl3 and the `image-quality` pipeline task with transformers."""
    importlib.import_module("hf_iqa.models").register_all()
    importlib.import_module("hf_iqa.pipelines")  # registers the task on import


def _is_trigger(name: str) -> bool:
    return name.startswith("Auto") or name == "pipeline"


def _arm(transformers: ModuleType) -> None:
    """Make the first lookup of an Auto class or `pipeline` on transformers' lazy module run `register()`."""
    resolve = type(transformers).__getattr__  # transformers' own lazy lookup

    def __getattr__(name: str):
        value = resolve(transformers, name)
        if _is_trigger(name):
            transformers.__dict__.pop("__getattr__", None)  # one shot: later lookups cost nothing
            register()
        return value

    # A module's own `__getattr__` (PEP 562) is consulted before its class's, so this wraps the lazy lookup.
    transformers.__dict__["__getattr__"] = __getattr__


class _ArmingLoader(importlib.abc.Loader):
    """transformers' own loader, then `_arm` on the module it leaves in `sys.modules`."""

    def __init__(self, loader: importlib.abc.Loader):
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec):
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = module.__spec__.loader = self.loader  # everyone else sees the real loader
        self.loader.exec_module(module)
        _uninstall_finder()
        transformers = sys.modules.get(TRANSFORMERS)
        if transformers is not None and hasattr(type(transformers), "__getattr__"):
            _arm(transformers)
        else:  # not the lazy module this expects: register now rather than miss the first use
            register()


class _TransformersFinder(importlib.abc.MetaPathFinder):
    """Lets the other finders locate transformers and wraps their loader in `_ArmingLoader`.

    It stays in `sys.meta_path` until transformers is actually loaded: a mere `importlib.util.find_spec`
    availability check (common in other libraries) does not disarm it."""

    _searching = False

    def find_spec(self, fullname: str, path=None, target=None):
        if fullname != TRANSFORMERS or self._searching:
            return None
        self._searching = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._searching = False
        if spec is not None and spec.loader is not None and not isinstance(spec.loader, _ArmingLoader):
            spec.loader = _ArmingLoader(spec.loader)
        return spec


def _uninstall_finder() -> None:
    sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, _TransformersFinder)]


def install() -> None:
    """Arm the triggers (called once by `import hf_iqa`)."""
    if any(name in sys.modules for name in _AUTO_MODULES):
        register()
        return
    transformers = sys.modules.get(TRANSFORMERS)
    if transformers is not None:
        if hasattr(type(transformers), "__getattr__"):
            _arm(transformers)
        else:  # not the lazy module we know: register now rather than miss the first use
            register()
        return
    if not any(isinstance(finder, _TransformersFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _TransformersFinder())
