"""Make peft know nora's methods (NORA, NORA_PLUS): the one place that touches peft's private tables.

peft 0.21's ``register_peft_method`` refuses any name that is not already a member of its closed
``PeftType`` enum, so it cannot register a method that lives outside peft.  This shim does what
``register_peft_method`` does after that check: it adds the member to ``PeftType`` (so
``adapter_config.json``'s ``"peft_type": "NORA"`` round-trips through ``PeftConfig.from_pretrained``
and ``PeftModel.from_pretrained``) and fills the four mapping tables of ``peft.mapping``.

It relies on the shape of those internals, checked by :func:`check_peft_internals` before anything
is changed: ``PeftType`` a ``str`` enum with ``_member_map_`` / ``_value2member_map_`` /
``_member_names_``, the four ``PEFT_TYPE_TO_*_MAPPING`` dicts, and ``register_peft_method``'s
keyword signature.  If a new peft changes any of them the registration fails with a message saying
what changed (tests/library/test_peft_methods.py holds this too); the supported range is pinned in
pyproject.toml (``SUPPORTED_PEFT``).

``import nora`` does not import peft (it costs seconds): :func:`install` registers the methods
at once if peft is already imported, else from an import hook when peft is first imported; using
``nora.NoraConfig`` imports peft and registers them too.
"""

from __future__ import annotations

import enum
import importlib
import importlib.abc
import importlib.machinery
import inspect
import sys

__all__ = ["SUPPORTED_PEFT", "PeftInternalsChanged", "check_peft_internals", "install", "register"]

SUPPORTED_PEFT = (">=0.21", "<0.22")  # keep in step with pyproject.toml's peft requirement
_TABLES = (
    "PEFT_TYPE_TO_CONFIG_MAPPING",
    "PEFT_TYPE_TO_TUNER_MAPPING",
    "PEFT_TYPE_TO_MIXED_MODEL_MAPPING",
    "PEFT_TYPE_TO_PREFIX_MAPPING",
)
_REGISTER_PARAMS = ("name", "config_cls", "model_cls", "prefix", "is_mixed_compatible")


class PeftInternalsChanged(RuntimeError):
    """peft's method tables no longer look the way this shim writes them (a peft upgrade)."""


def check_peft_internals() -> None:
    """Raise :class:`PeftInternalsChanged` naming what differs from peft 0.21's layout."""
    import peft
    import peft.mapping
    from peft.utils import peft_types

    def fail(what: str) -> None:
        raise PeftInternalsChanged(
            f"nora cannot register its peft methods with peft {peft.__version__}: {what}. nora supports peft "
            f"{','.join(SUPPORTED_PEFT)} (pyproject.toml); update nora/adapters/peft_shim.py for this peft."
        )

    peft_type = getattr(peft_types, "PeftType", None)
    if not (isinstance(peft_type, enum.EnumMeta) and issubclass(peft_type, str)):
        fail("peft.utils.peft_types.PeftType is no longer a str Enum")
    for attr, kind in (("_member_map_", dict), ("_value2member_map_", dict), ("_member_names_", list)):
        if not isinstance(getattr(peft_type, attr, None), kind):
            fail(f"PeftType.{attr} is not a {kind.__name__}")
    if peft_type("LORA") is not peft_type.LORA:
        fail("PeftType members are not looked up by value")
    for table in _TABLES:
        value = getattr(peft.mapping, table, None)
        if not isinstance(value, dict):
            fail(f"peft.mapping.{table} is missing or not a dict")
        if table != "PEFT_TYPE_TO_MIXED_MODEL_MAPPING" and peft_type.LORA not in value:
            fail(f"peft.mapping.{table} has no entry for LORA (tables filled differently)")
    register = getattr(peft_types, "register_peft_method", None)
    params = tuple(inspect.signature(register).parameters) if callable(register) else ()
    if params != _REGISTER_PARAMS:
        fail(f"register_peft_method's parameters are {params}, expected {_REGISTER_PARAMS}")


def _add_member(peft_type: type[enum.Enum], name: str) -> enum.Enum:
    """Add ``name`` (value == name, like every PeftType member) to the enum; idempotent."""
    if name in peft_type._member_map_:
        return peft_type._member_map_[name]
    member = str.__new__(peft_type, name)
    member._name_, member._value_ = name, name
    member.__objclass__ = peft_type
    peft_type._member_map_[name] = member
    peft_type._value2member_map_[name] = member
    peft_type._member_names_.append(name)
    type.__setattr__(peft_type, name, member)
    return member


def register(name: str, config_cls: type, model_cls: type, prefix: str) -> enum.Enum:
    """Register a peft method ``name`` (lower case, e.g. "nora") as ``register_peft_method`` would.

    Returns its ``PeftType`` member.  Registering the same classes twice is a no-op; another
    method already holding the name or the prefix raises ``ValueError``.
    """
    import peft.mapping
    from peft.utils.peft_types import PeftType

    check_peft_internals()
    if not name.islower() or name.endswith("_"):
        raise ValueError(f"name must be lower case without a trailing '_', got {name!r}")
    if getattr(model_cls, "prefix", prefix) != prefix:
        raise ValueError(f"prefix {prefix!r} differs from {model_cls.__name__}.prefix {model_cls.prefix!r}")
    key = name.upper()
    existing = peft.mapping.PEFT_TYPE_TO_CONFIG_MAPPING.get(key)
    if existing is not None and (existing is not config_cls or peft.mapping.PEFT_TYPE_TO_TUNER_MAPPING.get(key) is not model_cls):
        raise ValueError(f"peft already has a method {key} ({existing.__name__}); choose another name")
    owners = [t for t, p in peft.mapping.PEFT_TYPE_TO_PREFIX_MAPPING.items() if p == prefix and t != key]
    if owners:
        raise ValueError(f"prefix {prefix!r} is already used by peft method {owners[0]}")
    member = _add_member(PeftType, key)
    peft.mapping.PEFT_TYPE_TO_PREFIX_MAPPING[member] = prefix
    peft.mapping.PEFT_TYPE_TO_CONFIG_MAPPING[member] = config_cls
    peft.mapping.PEFT_TYPE_TO_TUNER_MAPPING[member] = model_cls
    return member


# ---------------------------------------------------------------------- when peft is imported

_METHODS_MODULE = "nora.adapters.nora"  # importing it registers NORA and NORA_PLUS (its last lines)


def _register_methods() -> None:
    # Already imported, or being imported (it imported peft, which brought us here): its end registers.
    if _METHODS_MODULE not in sys.modules:
        importlib.import_module(_METHODS_MODULE)


class _RegisteringLoader(importlib.abc.Loader):
    """peft's own loader; once peft has run, nora's methods are registered with it."""

    def __init__(self, inner: importlib.abc.Loader) -> None:
        self.inner = inner

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module) -> None:
        _uninstall()
        self.inner.exec_module(module)
        _register_methods()


class _PeftFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != "peft":
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _RegisteringLoader(spec.loader)
        return spec


def _uninstall() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _PeftFinder)]


def install() -> None:
    """Register NoRA / NoRA++ with peft now if peft is imported, else as soon as it is (``import nora`` stays light)."""
    if "peft" in sys.modules:
        _register_methods()
    elif not any(isinstance(f, _PeftFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _PeftFinder())
