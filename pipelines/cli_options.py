"""Command-line options generated from a job's options model (`agents.job_spec`).

`poise train` and `poise monitor` take one flag per field of `JobOptions` / `CheckOptions`,
with the field's type, choices, default and description, so the CLI cannot drift from the
API and the planners: a new option is a new field, and its flag follows. Values the user
did not give are left out, and the model's own validation (with the service defaults) runs
where the spec is made.
"""

from __future__ import annotations

import enum
import functools
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any, Literal

import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo


def with_options(model: type[BaseModel], flags: dict[str, tuple[str, ...]] | None = None,
                 exclude: frozenset[str] = frozenset()) -> Callable:
    """Give a typer command one option per field of `model` (besides its own parameters), and call it with
    `options=`: a dict of the values the user gave. `flags` spells a field's flags (e.g. a short `-t`); the
    default is the field name in kebab case, repeatable for list fields."""

    def decorate(command: Callable) -> Callable:
        own = [parameter for parameter in inspect.signature(command, eval_str=True).parameters.values()
               if parameter.name != "options"]
        fields = {name: field for name, field in model.model_fields.items() if name not in exclude}
        generated = [_parameter(name, field, (flags or {}).get(name)) for name, field in fields.items()]

        @functools.wraps(command)
        def run(**arguments: Any) -> Any:
            given = {name: _plain(arguments.pop(name)) for name in fields}
            options = {name: value for name, value in given.items() if value not in (None, [], ())}
            return command(**arguments, options=options)

        run.__signature__ = inspect.Signature(own + generated)  # type: ignore[attr-defined]
        run.__annotations__ = {parameter.name: parameter.annotation for parameter in own}
        return run

    return decorate


def _parameter(name: str, field: FieldInfo, flags: tuple[str, ...] | None) -> inspect.Parameter:
    python_type, choices, repeatable = _cli_type(field.annotation)
    required = field.is_required()
    declarations = flags or (f"--{name.replace('_', '-')}",)
    if python_type is bool:
        option = typer.Option(bool(field.default), *declarations, help=field.description)
    else:
        default = ... if required else None
        option = typer.Option(default, *declarations, help=_help(field, repeatable), show_default=False)
        if choices:  # typer offers the choices of an Enum
            python_type = enum.StrEnum(f"{name}_choices", {choice: choice for choice in choices})
        python_type = list[python_type] | None if repeatable else python_type if required else python_type | None
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=python_type)


def _plain(value: Any) -> Any:
    """A choice as its string (typer hands over Enum members)."""
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value.value if isinstance(value, enum.Enum) else value


def _help(field: FieldInfo, repeatable: bool) -> str:
    text = field.description or ""
    if field.default not in (None, ...) and not repeatable and not callable(field.default):
        text += f" (default {field.default})"
    return text + (" (repeatable)" if repeatable else "")


def _cli_type(annotation: Any) -> tuple[type, tuple[str, ...] | None, bool]:
    """(python type, choices, repeatable) of a field annotation such as `int | None`, `Literal[...]`,
    `list[Annotated[str, ...]]`."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _cli_type(typing.get_args(annotation)[0])
    if origin in (types.UnionType, typing.Union):
        present = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return _cli_type(present[0])
    if origin is list:
        python_type, choices, _ = _cli_type(typing.get_args(annotation)[0])
        return python_type, choices, True
    if origin is Literal:
        return str, tuple(map(str, typing.get_args(annotation))), False
    return annotation, None, False
