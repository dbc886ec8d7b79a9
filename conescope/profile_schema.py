"""The building blocks of the profile models: a frozen, key-checked record type, the value types the
YAML files use, and the translation of pydantic's validation errors into :class:`ProfileError`.

Every error reads ``<file>: <key.path>: <problem>`` (e.g. ``configs/demo.yaml:
models.vit-b-32.random.seed: expected an integer, got 'x'``). The models are pydantic dataclasses, so
``dataclasses.asdict`` and ``dataclasses.replace`` keep working on the validated records.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Union, get_args

from pydantic import (
    AliasPath,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    Tag,
    model_validator,
)
from pydantic import ValidationError as PydanticValidationError
from pydantic.dataclasses import dataclass
from pydantic_core import PydanticCustomError

# Partition keys become path segments and Dagster partition keys: keep them plain.
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]*$"
LANG_PATTERN = r"^[a-z]{2,3}$"

Text = Annotated[StrictStr, Field(min_length=1)]
Lang = Annotated[StrictStr, Field(pattern=LANG_PATTERN)]
Flag = StrictBool
Number = StrictFloat  # an int or a float in YAML (never a bool or a string)
Positive = Annotated[StrictFloat, Field(gt=0)]


def at_least(minimum: int) -> Any:
    return Annotated[StrictInt, Field(ge=minimum)]


def non_empty(item: Any) -> Any:
    return Annotated[tuple[item, ...], Field(min_length=1)]


# Tags of the tagged unions start with this mark, so that error paths can leave them out.
_TAG = ":"


def tagged_union(members: dict[str, type], tag_of: Callable[[dict], str | None]) -> Any:
    """A union of ``members`` picked by ``tag_of(mapping)`` (None: the tag is missing). An unknown tag is
    reported at the mapping's ``kind`` key, the key every tagged union of the profile reads it from."""

    def discriminate(value: Any) -> str | None:
        if not isinstance(value, dict):
            return None
        tag = tag_of(value)
        return None if tag is None else _TAG + str(tag)

    tagged = tuple(Annotated[cls, Tag(_TAG + name)] for name, cls in members.items())
    return Annotated[Union[tagged], Discriminator(discriminate)]  # noqa: UP007 (a runtime tuple of types)


class ProfileError(ValueError):
    """A profile is malformed; the message names the file and the key."""


def problem(message: str, *at: str | int) -> PydanticCustomError:
    """A validation failure with ``message``, located ``at`` below the key being validated."""
    return PydanticCustomError("profile", "{problem}", {"problem": message, "at": at})


def record(cls: type) -> type:
    """A frozen pydantic dataclass, keyword-only; a field's ``validation_alias`` (an ``AliasPath``) says
    where the YAML keeps it when that differs from its name (``transforms.gap_shift.lambdas``)."""
    return dataclass(frozen=True, kw_only=True,
                     config=ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True))(cls)


def kind_of(cls: type) -> str:
    """The ``kind`` literal of a record class (``kind: Literal["<name>"]``)."""
    (kind,) = get_args(cls.__pydantic_fields__["kind"].annotation)
    return kind


class KindRegistry:
    """Record classes picked by their ``kind`` literal, each registered by the module that defines it
    (the source kinds of ``conescope.ingest``, the model kinds of ``conescope.model_kinds``)."""

    def __init__(self, noun: str) -> None:
        self.noun = noun
        self.kinds: dict[str, type] = {}

    def register(self, cls: type) -> type:
        """Class decorator: ``cls``, made a profile record, is a kind of this registry."""
        cls = record(cls)
        kind = kind_of(cls)
        if self.kinds.get(kind, cls) is not cls:
            raise ValueError(f"{self.noun} {kind!r} registered twice ({self.kinds[kind].__module__}, {cls.__module__})")
        self.kinds[kind] = cls
        return cls

    def registered(self) -> dict[str, type]:
        """The kinds registered so far."""
        return dict(self.kinds)


@record
class Section:
    """Base of every profile record: checks the YAML keys, then lets :meth:`from_yaml` reshape them."""

    HIDDEN: ClassVar[frozenset[str]] = frozenset()  # fields set by the code, not written in YAML

    @model_validator(mode="before")
    @classmethod
    def _check_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data  # a constructor call (ArgsKwargs) or a non-mapping, which pydantic reports
        _check_tree(data, yaml_keys(cls), (), cls.HIDDEN)
        return cls.from_yaml(dict(data))

    @classmethod
    def from_yaml(cls, data: dict) -> dict:
        """The YAML mapping turned into this record's fields (``auto`` -> None and the like)."""
        return data


def yaml_keys(cls: type) -> dict:
    """The keys a record takes in YAML, as a tree: ``{key: None}`` for a value, ``{key: {...}}`` for a
    nested mapping that holds fields (from their alias paths)."""
    tree: dict = {}
    for name, info in cls.__pydantic_fields__.items():
        if name in cls.HIDDEN:
            continue
        path = info.validation_alias.path if isinstance(info.validation_alias, AliasPath) else [name]
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = None
    return tree


def _check_tree(data: dict, allowed: dict, at: tuple, hidden: frozenset[str] = frozenset()) -> None:
    for key, value in data.items():
        if key not in allowed:
            if key in hidden:
                continue
            raise problem(f"unknown key (allowed: {', '.join(sorted(allowed))})", *at, key)
        if allowed[key] is not None:
            if not isinstance(value, dict):
                raise problem(f"expected a mapping, got {type(value).__name__}", *at, key)
            _check_tree(value, allowed[key], (*at, key))


def profile_error(source: str, exc: PydanticValidationError) -> ProfileError:
    """One line ``<source>: <key.path>: <problem>`` per error, the first error first."""
    lines = []
    for err in exc.errors():
        loc = [part for part in err["loc"] if not (isinstance(part, str) and part.startswith(_TAG))]
        loc += list((err.get("ctx") or {}).get("at", ()))
        message = _problem(err)
        if err["type"] == "union_tag_invalid" or (err["type"] == "union_tag_not_found"
                                                  and isinstance(err["input"], dict)):
            loc.append("kind")
        lines.append(f"{source}: {key_path(loc)}: {message}")
    return ProfileError("\n".join(dict.fromkeys(lines)))


def key_path(loc: list) -> str:
    out = ""
    for part in loc:
        if part == "[key]":
            continue  # pydantic's mark of a mapping key that failed: the key itself is the last part
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _problem(err: dict) -> str:
    kind, value, ctx = err["type"], err["input"], err.get("ctx") or {}
    if kind == "profile":
        return ctx["problem"]
    if kind == "missing":
        return "missing required key"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected an integer, got {value!r}"
    if kind == "bool_type":
        return f"expected true or false, got {value!r}"
    if kind in ("float_type", "float_parsing"):
        return f"expected a number, got {value!r}"
    if kind in ("string_type", "string_too_short"):
        return f"expected a non-empty string, got {value!r}"
    if kind == "string_pattern_mismatch":
        return f"{value!r} does not match {ctx['pattern']}"
    if kind == "greater_than_equal":
        return f"must be >= {ctx['ge']}, got {value}"
    if kind == "greater_than":
        return f"expected a positive number, got {value!r}" if ctx["gt"] == 0 else f"must be > {ctx['gt']}"
    if kind in ("literal_error", "enum"):
        return f"{value!r} is not one of {_choices(ctx['expected'])}"
    if kind == "union_tag_invalid":
        return f"{ctx['tag'][len(_TAG):]!r} is not one of {_choices(ctx['expected_tags'])}"
    if kind in ("too_short", "list_type", "tuple_type"):
        return f"expected a non-empty list, got {value!r}"
    if kind in ("dict_type", "dataclass_type", "dataclass_args_type", "model_type", "union_tag_not_found"):
        return "missing required key" if isinstance(value, dict) else \
            f"expected a mapping, got {type(value).__name__}"
    return err["msg"]


def _choices(expected: str) -> str:
    names = re.findall(r"'([^']*)'", expected)
    return ", ".join(n[len(_TAG):] if n.startswith(_TAG) else n for n in names)
