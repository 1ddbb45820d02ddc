"""JSON for fleet's frozen dataclasses, both ways, checked against their type hints: what fleet's own processes
send each other (the watcher's socket) is data, never code, and a value of the wrong shape is refused by path.

`encode(T, value)` gives plain JSON data and `decode(T, data)` the value back; both walk the type `T`, not the
data, so nothing in the data chooses what gets built. Carried: None, bool, int, float (finite), str, enums (by
value), `X | Y`, `Literal[...]`, `tuple[X, ...]`, `tuple[X, Y]`, `list[X]`, `frozenset[X]`, `dict[str, X]`,
`Mapping[str, X]` (back as a read-only mapping) and dataclasses (an object with exactly their init fields, built
through their constructor). Anything else is refused, as is any mismatch: a `WireError` naming where
(`services[0].replicas[1].port: expected int, got 'x'`).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import math
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, cast

from fleet.core.errors import WireError


def dumps(tp: Any, value: Any) -> bytes:
    """`value` (of type `tp`) as compact JSON bytes; WireError when it is not a `tp`."""
    return json.dumps(encode(tp, value), separators=(",", ":"), allow_nan=False).encode()


def loads(tp: Any, data: bytes) -> Any:
    """The `tp` that `data` (from `dumps`) holds; WireError for anything else, JSON or not."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise _refuse("", f"not JSON ({exc})") from None
    return decode(tp, doc)


def encode(tp: Any, value: Any, where: str = "") -> Any:
    return _walk(tp, value, where, True)


def decode(tp: Any, data: Any, where: str = "") -> Any:
    return _walk(tp, data, where, False)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _refuse(where: str, message: str) -> WireError:
    return WireError(f"{where or 'value'}: {message}")


def _got(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'…' if len(text) > 60 else ''}"


def _walk(tp: Any, value: Any, where: str, out: bool) -> Any:
    """One step of `encode` (`out`) or `decode`: `value` checked against `tp`, converted, its parts walked."""
    if tp is type(None) or tp is None:
        if value is not None:
            raise _refuse(where, f"expected null, got {_got(value)}")
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise _refuse(where, f"expected bool, got {_got(value)}")
        return value
    if tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _refuse(where, f"expected int, got {_got(value)}")
        return int(value)
    if tp is float:
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            raise _refuse(where, f"expected a finite float, got {_got(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _refuse(where, f"expected str, got {_got(value)}")
        return str(value)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if out:
            if not isinstance(value, tp):
                raise _refuse(where, f"expected {tp.__name__}, got {_got(value)}")
            return _walk(type(value.value), value.value, where, out)
        try:
            return tp(value)
        except (ValueError, TypeError):
            raise _refuse(where, f"expected {tp.__name__}, got {_got(value)}") from None
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _dataclass(tp, value, where, out)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        # `X | None`: a value that is not None must be an X, and its own error says where it is not.
        others = [a for a in args if a is not type(None)]
        if len(others) == 1 and len(args) == 2:
            return None if value is None else _walk(others[0], value, where, out)
        problems = []
        for arm in args:
            try:
                return _walk(arm, value, where, out)
            except WireError as exc:
                problems.append(str(exc))
        raise _refuse(where, f"matches none of {tp}: " + "; ".join(problems))
    if origin is typing.Literal:
        if not any(value == a and type(value) is type(a) for a in args):
            raise _refuse(where, f"expected one of {list(args)}, got {_got(value)}")
        return value
    if origin in (tuple, list, frozenset):
        return _sequence(origin, args, value, where, out)
    if origin in (dict, Mapping):
        return _mapping(origin, args, value, where, out)
    raise _refuse(where, f"cannot carry {tp}")


def _dataclass(cls: type, value: Any, where: str, out: bool) -> Any:
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    if out:
        if type(value) is not cls:
            raise _refuse(where, f"expected {cls.__name__}, got {_got(value)}")
        return {n: _walk(hints[n], getattr(value, n), f"{where}.{n}" if where else n, out) for n in names}
    if not isinstance(value, dict):
        raise _refuse(where, f"expected {cls.__name__} (an object), got {_got(value)}")
    if set(value) != set(names):
        extra, missing = sorted(set(value) - set(names)), sorted(set(names) - set(value))
        raise _refuse(where, f"{cls.__name__} fields differ (unknown: {extra}, missing: {missing})")
    kwargs = {n: _walk(hints[n], value[n], f"{where}.{n}" if where else n, out) for n in names}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise _refuse(where, f"not a valid {cls.__name__}: {exc}") from None


def _sequence(origin: type, args: tuple[Any, ...], value: Any, where: str, out: bool) -> Any:
    # Sent: the value's own kind (a tuple field may hold a list); received: a JSON array only.
    want: tuple[type, ...] = (list,)
    if out:
        want = (frozenset, set) if origin is frozenset else (tuple, list)
    if not isinstance(value, want):
        raise _refuse(where, f"expected a {origin.__name__}, got {_got(value)}")
    items: list[Any] = list(cast(Iterable[Any], value))
    if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
        if len(items) != len(args):
            raise _refuse(where, f"expected {len(args)} items, got {len(items)}")
        walked = [_walk(a, v, f"{where}[{i}]", out) for i, (a, v) in enumerate(zip(args, items, strict=True))]
    else:
        walked = [_walk(args[0], v, f"{where}[{i}]", out) for i, v in enumerate(items)]
    if out or origin is list:
        return walked
    return origin(walked)


def _mapping(origin: type, args: tuple[Any, ...], value: Any, where: str, out: bool) -> Any:
    if args[0] is not str:
        raise _refuse(where, f"cannot carry {origin.__name__}[{args[0]}, ...]: mapping keys must be str")
    if not isinstance(value, Mapping if out else dict):
        raise _refuse(where, f"expected a mapping, got {_got(value)}")
    walked = {}
    for k, v in value.items():
        if not isinstance(k, str):
            raise _refuse(where, f"expected str keys, got {_got(k)}")
        walked[k] = _walk(args[1], v, f"{where}.{k}" if where else k, out)
    if out or origin is dict:
        return walked
    return types.MappingProxyType(walked)
