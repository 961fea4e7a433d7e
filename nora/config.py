"""A dataclass base for adapter configs: validated on construction, round-trips through JSON."""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

__all__ = ["BaseConfig"]

_CLASS_PREFIX = "class:"


def _encode(value: Any) -> Any:
    if isinstance(value, type):
        return f"{_CLASS_PREFIX}{value.__module__}:{value.__qualname__}"
    if isinstance(value, (tuple, list)):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_CLASS_PREFIX):
        module, _, qualname = value[len(_CLASS_PREFIX) :].partition(":")
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        return obj
    if isinstance(value, list):
        return tuple(_decode(v) for v in value)
    return value


@dataclasses.dataclass
class BaseConfig:
    """Subclasses are dataclasses that implement ``validate()`` (raise ValueError naming the field)."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:  # pragma: no cover - overridden
        """Raise ``ValueError`` naming the offending field; called on construction and before use."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _encode(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Any):
        if not isinstance(data, dict):
            raise ValueError(f"{cls.__name__}: config must be a JSON object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}")
        try:
            decoded = {k: _decode(v) for k, v in data.items()}
        except (ImportError, AttributeError, ValueError) as err:
            raise ValueError(f"{cls.__name__}: cannot resolve a class named in the config: {err}") from err
        return cls(**decoded)
