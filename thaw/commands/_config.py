"""Command options bound to a config dataclass: one option per field, the config built from the parsed values.

:func:`config_options` reads the dataclass from its *source* (``ast``), not by importing it: the ranking configs'
modules load torch, and ``thaw --help`` must not. Each field becomes an option with the field's name, type and
default and the help of ``field(metadata={"help": ...})`` (else the class docstring's ``Attributes:`` entry); a
tuple field is a comma-separated option (``all`` for a ``None`` element) unless :class:`Opt` makes it repeatable.
The command receives a :class:`BoundConfig` and builds the config inside its body (where the heavy import is)::

    @app.command("ranker-groups")
    @config_options("ranking.evaluation.ranker_groups:RankGroupsConfig", options={"export_dir": Opt(param="export")})
    def evaluate_ranker_groups(config: BoundConfig) -> None:
        from ranking.evaluation.ranker_groups import RankGroupsConfig
        cfg = config.build(RankGroupsConfig)

:meth:`BoundConfig.build` checks the source reading against the imported class (field names, defaults).
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import importlib
import importlib.util
import inspect
import operator
import re
import sys
import types
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import typer

T = TypeVar("T")
_PROJECT = ("contracts", "infra", "encoders", "indexing", "workloads", "ranking", "streams", "serving")
_OPERATORS: dict[type[ast.AST], Callable[..., Any]] = {
    ast.BitOr: operator.or_, ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Pow: operator.pow,
    ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_,
}
_SCALARS = (int, float, str, bool, Path)


class ConfigSourceError(TypeError):
    """A config dataclass that the options cannot be read from (an unsupported expression or field type)."""


# ------------------------------------------------------------------------------------- reading the source
@cache
def _module_tree(module: str) -> ast.Module:
    top, *rest = module.split(".")
    spec = importlib.util.find_spec(top)  # a top-level name: found, not imported
    if spec is None or not spec.submodule_search_locations:
        raise ConfigSourceError(f"no package {top!r}")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*rest)
    file = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    return ast.parse(file.read_text(encoding="utf-8"), filename=str(file))


@dataclasses.dataclass(frozen=True)
class _Class:
    """A class of a project module, known by its source; its attributes are its class-level assignments."""

    module: str
    node: ast.ClassDef

    def attribute(self, name: str) -> Any:
        for stmt in reversed(self.node.body):
            if isinstance(stmt, ast.AnnAssign | ast.Assign) and stmt.value is not None and name in _targets(stmt):
                return _evaluate(_default_expr(stmt.value), self.module)
        raise ConfigSourceError(f"{self.module}.{self.node.name} has no class attribute {name!r}")


def _targets(stmt: ast.AnnAssign | ast.Assign) -> list[str]:
    targets = [stmt.target] if isinstance(stmt, ast.AnnAssign) else stmt.targets
    return [t.id for t in targets if isinstance(t, ast.Name)]


def _lookup(module: str, name: str) -> Any:
    """The value ``name`` has at the top of ``module`` (a project module read from source, or a stdlib one)."""
    if module.split(".")[0] not in _PROJECT:
        if module.split(".")[0] not in sys.stdlib_module_names:
            raise ConfigSourceError(f"{name!r} comes from {module!r}, neither the project nor the standard library")
        return getattr(importlib.import_module(module), name)
    for stmt in reversed(_module_tree(module).body):
        if isinstance(stmt, ast.AnnAssign | ast.Assign) and stmt.value is not None and name in _targets(stmt):
            return _evaluate(stmt.value, module)
        if isinstance(stmt, ast.ClassDef) and stmt.name == name:
            return _Class(module, stmt)
        if isinstance(stmt, ast.ImportFrom) and stmt.level == 0 and stmt.module:
            for alias in stmt.names:
                if (alias.asname or alias.name) == name:
                    return _lookup(stmt.module, alias.name)
    if hasattr(builtins, name):
        return getattr(builtins, name)
    raise ConfigSourceError(f"{module} defines no {name!r}")


def _evaluate(node: ast.expr, module: str) -> Any:
    """The value of a constant expression of ``module``: literals, names, attributes, subscripts, operators."""
    match node:
        case ast.Constant(value=value):
            return value
        case ast.Tuple(elts=elts) | ast.List(elts=elts):
            out: list[Any] = []
            for elt in elts:
                if isinstance(elt, ast.Starred):
                    out.extend(_evaluate(elt.value, module))
                else:
                    out.append(_evaluate(elt, module))
            return tuple(out) if isinstance(node, ast.Tuple) else out
        case ast.Dict(keys=keys, values=values) if None not in keys:  # no ``**other`` entries
            pairs = zip(keys, values, strict=True)
            return {_evaluate(k, module): _evaluate(v, module) for k, v in pairs if k is not None}
        case ast.Name(id=name):
            return _lookup(module, name)
        case ast.Attribute(value=value, attr=attr):
            owner = _evaluate(value, module)
            return owner.attribute(attr) if isinstance(owner, _Class) else getattr(owner, attr)
        case ast.Subscript(value=value, slice=index):
            return _evaluate(value, module)[_evaluate(index, module)]
        case ast.BinOp(left=left, op=op, right=right) if type(op) in _OPERATORS:
            return _OPERATORS[type(op)](_evaluate(left, module), _evaluate(right, module))
        case ast.UnaryOp(op=op, operand=operand) if type(op) in _OPERATORS:
            return _OPERATORS[type(op)](_evaluate(operand, module))
    raise ConfigSourceError(f"{module}: cannot read {ast.unparse(node)!r} without running it")


def _field_call(value: ast.expr) -> dict[str, ast.expr] | None:
    """The keywords of ``field(...)`` / ``dataclasses.field(...)``, or None for a plain default."""
    if isinstance(value, ast.Call) and ast.unparse(value.func) in ("field", "dataclasses.field"):
        return {k.arg: k.value for k in value.keywords if k.arg is not None}
    return None


def _default_expr(value: ast.expr) -> ast.expr:
    call = _field_call(value)
    if call is None:
        return value
    if "default" not in call:
        raise ConfigSourceError(f"{ast.unparse(value)!r} has no plain default")
    return call["default"]


def _attribute_docs(doc: str | None) -> dict[str, str]:
    """The entries of a Google-style docstring's ``Attributes:`` section, each as one line."""
    docs: dict[str, str] = {}
    lines = (doc or "").splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "Attributes:"), None)
    if start is None:
        return docs
    indent, name = None, ""
    for line in lines[start + 1:]:
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        indent = depth if indent is None else indent
        if depth < indent:
            break
        entry = re.match(r"(\w+)(?: \([^)]*\))?: (.*)", line.strip()) if depth == indent else None
        if entry:
            name, docs[entry[1]] = entry[1], entry[2]
        elif name:
            docs[name] += " " + line.strip()
    return docs


@dataclasses.dataclass(frozen=True)
class SourceField:
    """One field of a config dataclass as its source declares it (annotation and default evaluated on demand)."""

    module: str
    name: str
    annotation_node: ast.expr
    value: ast.expr | None
    doc: str | None

    @property
    def annotation(self) -> Any:
        """The field's type."""
        return _evaluate(self.annotation_node, self.module)

    @property
    def default(self) -> Any:
        """The field's default (``dataclasses.MISSING`` when it has none or a ``default_factory``)."""
        if self.value is None:
            return dataclasses.MISSING
        call = _field_call(self.value)
        if call is not None and "default" not in call:
            return dataclasses.MISSING
        return _evaluate(_default_expr(self.value), self.module)

    @property
    def help(self) -> str | None:
        """``metadata={"help": ...}``, else the docstring's entry."""
        call = _field_call(self.value) if self.value is not None else None
        if call is not None and "metadata" in call:
            metadata = _evaluate(call["metadata"], self.module)
            if "help" in metadata:
                return str(metadata["help"])
        return self.doc


@cache
def source_fields(target: str) -> tuple[SourceField, ...]:
    """The fields of the dataclass ``"package.module:Class"``, read from its source without importing it."""
    module, _, name = target.partition(":")
    cls = _lookup(module, name)
    if not isinstance(cls, _Class) or cls.node.bases:
        raise ConfigSourceError(f"{target} is not a dataclass without base classes")
    docs = _attribute_docs(ast.get_docstring(cls.node))
    return tuple(
        SourceField(cls.module, stmt.target.id, stmt.annotation, stmt.value, docs.get(stmt.target.id))
        for stmt in cls.node.body
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
        and "ClassVar" not in ast.unparse(stmt.annotation)
    )


# ------------------------------------------------------------------------------------------ the options
@dataclasses.dataclass(frozen=True)
class Opt:
    """Where a field's option differs from what the field gives.

    Attributes:
        param: Parameter name of the option (``--param``; default: the field's name).
        decls: Option declarations, e.g. ``("-v", "--verbose")`` (default: typer's for ``param``).
        help: Help text (default: the field's ``metadata["help"]``, else its docstring entry).
        repeat: A tuple field as a repeatable option (default ``None``: the field's default) instead of a
            comma-separated one.
        to_field: Turns the parsed value into the field's value (after the comma / repeat parsing).
    """

    param: str | None = None
    decls: tuple[str, ...] = ()
    help: str | None = None
    repeat: bool = False
    to_field: Callable[[Any], Any] | None = None


def _split_optional(tp: Any) -> tuple[Any, bool]:
    """``(X, True)`` for ``X | None``, else ``(tp, False)``."""
    if get_origin(tp) in (Union, types.UnionType) and type(None) in get_args(tp):
        rest = tuple(a for a in get_args(tp) if a is not type(None))
        return (rest[0] if len(rest) == 1 else Union[rest]), True  # noqa: UP007 - a runtime union of several
    return tp, False


def _is_scalar(tp: Any) -> bool:
    base, _ = _split_optional(tp)
    return base in _SCALARS or get_origin(base) is Literal


def _tuple_element(tp: Any) -> Any | None:
    """``E`` of ``tuple[E, ...]``, else None."""
    args = get_args(tp)
    return args[0] if get_origin(tp) is tuple and len(args) == 2 and args[1] is Ellipsis else None


def _csv_parser(element: Any) -> Callable[[str], tuple[Any, ...]]:
    base, optional = _split_optional(element)
    convert = str if get_origin(base) is Literal else base

    def parse(text: str) -> tuple[Any, ...]:
        tokens = [t.strip() for t in text.split(",") if t.strip()]
        return tuple(None if optional and t == "all" else convert(t) for t in tokens)

    return parse


@dataclasses.dataclass(frozen=True)
class _Bound:
    """One field's option: the typer parameter and how its value becomes the field's."""

    field: str
    parameter: inspect.Parameter
    to_field: Callable[[Any], Any]
    omit_none: bool  # a repeatable option left out keeps the field's default


def _same(value: Any) -> Any:
    return value


def _cli_form(target: str, f: SourceField, repeat: bool) -> tuple[Any, Any, Callable[[Any], Any]]:
    """The option's type and default for field ``f``, and how its parsed value becomes the field's."""
    tp, default = f.annotation, f.default
    if default is dataclasses.MISSING:
        raise ConfigSourceError(f"{target}.{f.name} has no plain default: skip it or give it one")
    element = _tuple_element(tp)
    if repeat and (element is None or not _is_scalar(element)):
        raise ConfigSourceError(f"{target}.{f.name}: only a tuple of scalars is a repeatable option")
    if element is not None and _is_scalar(element):
        if repeat:
            return list[element] | None, None, tuple  # type: ignore[valid-type]
        return str, ",".join("all" if v is None else str(v) for v in default), _csv_parser(element)
    if _is_scalar(tp):
        return tp, default, _same
    raise ConfigSourceError(f"{target}.{f.name}: {tp!r} has no command-line form: skip it")


def _bind(target: str, f: SourceField, opt: Opt) -> _Bound:
    cli_type, default, convert = _cli_form(target, f, opt.repeat)
    then = opt.to_field
    to_field = convert if then is None else (lambda v: then(convert(v)))
    option = typer.Option(*opt.decls, help=opt.help if opt.help is not None else f.help)
    parameter = inspect.Parameter(opt.param or f.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                  annotation=Annotated[cli_type, option])
    return _Bound(f.name, parameter, to_field, omit_none=opt.repeat)


@dataclasses.dataclass(frozen=True)
class BoundConfig:
    """The parsed values of a command's config options; :meth:`build` makes the config."""

    target: str
    values: Mapping[str, Any]

    def build(self, cls: type[T], **extra: Any) -> T:
        """``cls(**values, **extra)``, after checking that ``cls`` is the class the options were read from."""
        if f"{cls.__module__}:{cls.__qualname__}" != self.target:
            raise ConfigSourceError(f"the options were read from {self.target}, not {cls.__qualname__}")
        real = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        read = source_fields(self.target)
        if list(real) != [f.name for f in read]:
            raise ConfigSourceError(f"{self.target}: the fields read from its source are not the class's")
        for f in read:
            if f.name in self.values and real[f.name].default is not dataclasses.MISSING \
                    and real[f.name].default != f.default:
                raise ConfigSourceError(f"{self.target}.{f.name}: its default read from the source, {f.default!r}, "
                                        f"is not the class's {real[f.name].default!r}")
        return cls(**self.values, **extra)


def _signature(command: Callable[..., None], into: str, fields: list[inspect.Parameter],
               order: Iterable[str]) -> inspect.Signature:
    """The command's own parameters (less ``into``) and the fields', keyword-only, ``order`` first."""
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != into]
    by_name: dict[str, inspect.Parameter] = {}
    for p in [*own, *fields]:
        if p.name in by_name:
            raise ConfigSourceError(f"{command.__name__}: two options named {p.name!r}")
        by_name[p.name] = p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
    first = list(order)
    if set(first) - set(by_name):
        raise ConfigSourceError(f"{command.__name__}: unknown names in order: {sorted(set(first) - set(by_name))}")
    return inspect.Signature([by_name[n] for n in [*first, *(n for n in by_name if n not in first)]])


def config_options(
    target: str,
    *,
    skip: Iterable[str] = (),
    options: Mapping[str, Opt] | None = None,
    order: Iterable[str] = (),
    into: str = "config",
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Adds an option per field of the dataclass ``target`` (``"package.module:Class"``) to the command.

    Args:
        target: The config dataclass.
        skip: Fields with no option (the config's default applies).
        options: Per-field differences from the field (:class:`Opt`).
        order: Parameter names in the order ``--help`` lists them; those not named follow (the command's own
            parameters, then the fields in their order).
        into: The command's parameter that receives the :class:`BoundConfig`.
    """
    options = dict(options or {})
    skipped = set(skip)
    fields = source_fields(target)
    unknown = (skipped | set(options)) - {f.name for f in fields}
    if unknown:
        raise ConfigSourceError(f"{target} has no fields {sorted(unknown)}")
    bound = [_bind(target, f, options.get(f.name, Opt())) for f in fields if f.name not in skipped]

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        def run(**kwargs: Any) -> None:
            values = {}
            for b in bound:
                value = kwargs.pop(b.parameter.name)
                if not (b.omit_none and value is None):
                    values[b.field] = b.to_field(value)
            command(**kwargs, **{into: BoundConfig(target, values)})

        run.__name__, run.__qualname__, run.__doc__ = command.__name__, command.__qualname__, command.__doc__
        run.__module__ = command.__module__
        run.__signature__ = _signature(command, into, [b.parameter for b in bound], order)  # type: ignore[attr-defined]
        return run

    return decorate
