"""Let torchvision import next to a CPU-only torch (the registry ships only its CUDA build).

torchvision 0.28's compiled ops do not load against the CPU build of torch, so its fake-tensor
registrations for ``torchvision::nms`` and ``torchvision::qnms`` fail with "operator ... does
not exist" — and with them ``import timm``, ``import peft`` and transformers' models, which
import torchvision.  The hook here is an import finder: when torchvision is first imported and
fails with exactly that error, the two schemas are declared and the import is retried.  Nothing
is declared when the import works (CUDA torch users see no difference), and nothing is imported
early: this file imports only ``sys``, and torch only once torchvision has failed on it.

Two ways in, one finder:

* the start-up hook, ``nora_torchvision_hook.pth`` in the environment's site-packages, loads this
  file by its path (as ``_nora_torchvision_hook``, without importing the ``nora`` package) and
  installs the finder in every interpreter, so any import order works.  ``make setup`` writes it;
  ``python -m nora.torchvision_hook install | uninstall | status`` writes, removes or shows it;
* ``import nora`` installs the finder itself when no hook did (e.g. after a plain ``pip install``),
  which covers timm / transformers / peft imported after ``import nora``.
"""

import sys

__all__ = ["declared", "install"]

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_LIBRARY = None  # the torch.library.Library holding the two schemas, once this copy declared them
_MARKER = "nora_torchvision_hook"  # attribute of the finder, whichever copy of this file made it
_HOOK_MODULE = "_nora_torchvision_hook"  # the name the start-up hook loads this file under


def _is_missing_op(err: BaseException) -> bool:
    text = str(err)
    return isinstance(err, RuntimeError) and "torchvision::" in text and "does not exist" in text


def _declare_schemas() -> None:
    global _LIBRARY
    if _LIBRARY is None:
        import torch  # already imported: torchvision imported it before failing

        _LIBRARY = torch.library.Library("torchvision", "FRAGMENT")
        for schema in _SCHEMAS:
            try:
                _LIBRARY.define(schema)
            except RuntimeError:
                pass  # already declared


def declared() -> bool:
    """Whether the schemas were declared in this process (by ``import nora`` or by the start-up hook)."""
    return any(getattr(sys.modules.get(name), "_LIBRARY", None) is not None for name in (__name__, _HOOK_MODULE))


class _RetryingLoader:
    """Runs torchvision's own loader; on the missing-op failure declares the schemas and runs it again."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def __getattr__(self, name):  # get_data, get_resource_reader, is_package, ...: torchvision's own
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module) -> None:
        _uninstall()  # torchvision is being imported now: later imports go the normal way
        module.__loader__ = module.__spec__.loader = self.inner  # torchvision looks as if imported plainly
        try:
            self.inner.exec_module(module)
        except RuntimeError as err:
            if not _is_missing_op(err):
                raise
            # The retry starts clean: the first run's submodules leave sys.modules and the package
            # (else `from torchvision import x` would keep a stale x that sys.modules no longer has).
            for name in [m for m in sys.modules if m.startswith("torchvision.")]:
                submodule, attr = sys.modules.pop(name), name[len("torchvision."):]
                if getattr(module, attr, None) is submodule:
                    delattr(module, attr)
            _declare_schemas()
            self.inner.exec_module(module)


class _TorchvisionFinder:
    """A meta-path finder that wraps torchvision's loader; it answers for no other module."""

    nora_torchvision_hook = True  # _MARKER

    def find_spec(self, fullname, path, target=None):
        if fullname != "torchvision":
            return None
        from importlib.machinery import PathFinder

        spec = PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _RetryingLoader(spec.loader)
        return spec


def _uninstall() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if getattr(f, _MARKER, False) is not True]


def install() -> None:
    """Install the finder unless torchvision is already imported (then it worked or failed already)
    or a finder is already in place (the start-up hook's, or an earlier call's)."""
    if "torchvision" in sys.modules or any(getattr(f, _MARKER, False) is True for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _TorchvisionFinder())
