"""Pydantic's validation errors as `Problem`s at the YAML document's line marks: one mapping for inventories and
playbooks, so both say the same thing the same way."""

from __future__ import annotations

from pydantic import ValidationError

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


def pydantic_problems(exc: ValidationError, doc: Marked, prefix: tuple[str | int, ...] = ()) -> list[Problem]:
    """Map pydantic's errors onto the document's line marks, with messages phrased for the file's author."""
    problems = []
    for err in exc.errors(include_url=False):
        loc = (*prefix, *(p for p in err["loc"] if isinstance(p, str | int)))
        kind = err["type"]
        if kind == "extra_forbidden":
            msg = "unknown field"
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
