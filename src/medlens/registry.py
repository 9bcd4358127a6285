"""A small registry used for every family (models, losses, explainers, layouts).

Modelled on timm's ``_registry``: register where the thing is defined, build by name,
discover with a wildcard.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from medlens.options import look_up_option

T = TypeVar("T")


class Registry(Generic[T]):
    """Name → factory mapping with did-you-mean lookups."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._items: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            key = name or getattr(obj, "__name__", None)
            if not key:
                raise ValueError(f"{self.what} registration needs a name")
            if key in self._items:
                raise ValueError(f"{self.what} {key!r} is registered twice")
            self._items[key] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        return self._items[look_up_option(name, self._items, what=self.what)]

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __call__(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self.get(name)(*args, **kwargs)  # type: ignore[operator]
