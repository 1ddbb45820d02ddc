"""Pydantic's validation errors as `Problem`s at the YAML document's line marks: one mapping for inventories and
playbooks, so both say the same thing the same way."""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from fleet.config.yamlmarks import Marked
from fleet.core.errors import Problem

_TYPE_MESSAGES = {
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "string_type": "expected a string",
    "list_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
}


def pydantic_problems(exc: ValidationError, doc: Marked, prefix: tuple[str | int, ...] = (),
                      model: type[BaseModel] | None = None) -> list[Problem]:
    """Map pydantic's errors onto the document's line marks, with messages phrased for the file's author. With
    the `model` validated, an unknown field names the closest known ones (`unknown field (did you mean
    'replicas'?)`)."""
    problems = []
    for err in exc.errors(include_url=False):
        loc = (*prefix, *(p for p in err["loc"] if isinstance(p, str | int)))
        kind = err["type"]
        if kind == "extra_forbidden":
            msg = "unknown field" + _suggestion(model, err["loc"])
        elif kind == "missing":
            msg = "required field is missing"
        elif kind in _TYPE_MESSAGES:
            msg = f"{_TYPE_MESSAGES[kind]}, got {err['input']!r}"
        elif kind == "value_error":
            msg = str(err["ctx"]["error"]) if "ctx" in err else err["msg"]
        elif kind == "literal_error":
            msg = f"expected {err['ctx']['expected']}, got {err['input']!r}"
        else:
            msg = f"{err['msg']}, got {err['input']!r}" if "input" in err else err["msg"]
        problems.append(doc.problem(loc, msg))
    return problems


def _suggestion(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> str:
    """` (did you mean 'x'?)` for an unknown field at `loc` of `model`, from the fields of the model it is in."""
    if model is None or not loc or not isinstance(loc[-1], str):
        return ""
    owner = _model_at(model, loc[:-1])
    if owner is None:
        return ""
    names = [f.alias or name for name, f in owner.model_fields.items()]
    close = difflib.get_close_matches(loc[-1], names, n=2, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def _model_at(model: type[BaseModel], path: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that holds the field at `path` (field names, mapping keys, list indexes; a step that is
    none of these, such as the tag pydantic adds for a union member, is passed over)."""
    current: Any = model
    for part in path:
        current = _step(current, part) or current
    return _models(current)[0] if len(_models(current)) == 1 else None


def _step(tp: Any, part: Any) -> Any:
    for candidate in _members(tp):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            for name, f in candidate.model_fields.items():
                if part in (name, f.alias):
                    return f.annotation
        origin = typing.get_origin(candidate)
        if origin is dict and isinstance(part, str):
            return typing.get_args(candidate)[1]
        if origin in (list, tuple) and isinstance(part, int):
            return typing.get_args(candidate)[0]
    return None


def _members(tp: Any) -> list[Any]:
    """The types a field may hold: the members of a union (X | None), else itself."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [m for m in typing.get_args(tp) if m is not type(None)]
    return [tp]


def _models(tp: Any) -> list[type[BaseModel]]:
    return [m for m in _members(tp) if isinstance(m, type) and issubclass(m, BaseModel)]
