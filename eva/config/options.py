"""Options named by `_target_`: how eva turns a group's config node into an object.

Every option of the groups model, dataset, augment, optimizer and scheduler is one YAML
whose `_target_` names a class or function (eva's own or a user's, e.g.
`_target_: mylab.nets.TinyNet`) plus its keyword arguments. A node holds two kinds of keys:

- eva's own keys (GROUP_KEYS in eva/config/schemas.py: `name`, `gradcam_layer`, the
  dataset's mean/std, ...), typed there and never passed to the builder;
- everything else, the builder's keyword arguments, checked against its signature.

eva adds what it knows (`in_channels`, `num_classes` for a model, the image size for an
augmentation, the optimizer for a scheduler...) when the builder's signature accepts it.
Building imports the target, hence torch: only runs call this module's builders;
composition and `--help` never do.
"""

import dataclasses
import importlib
import inspect
import types
import typing
from collections.abc import Callable

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ValidationError

from eva.errors import EvaError

TARGET = "_target_"
HYDRA_KEYS = {TARGET, "_partial_", "_recursive_", "_convert_", "_args_"}


def import_target(path: str, where: str) -> Callable:
    """The class or function at dotted `path`; one line naming the module and the error."""
    if not isinstance(path, str) or "." not in path:
        raise EvaError(f"{where}._target_={path!r}: expected a dotted path such as mylab.nets.Net")
    module_name, _, attr = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # ImportError, or any error raised while the module runs
        why = " ".join(str(e).split()) or type(e).__name__
        raise EvaError(
            f"{where}._target_={path}: cannot import module {module_name} ({type(e).__name__}: "
            f"{why}); is its package installed, or its folder on PYTHONPATH?"
        ) from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise EvaError(f"{where}._target_={path}: module {module_name} has no {attr!r}") from None


def target_name(path: str) -> str:
    return path.rpartition(".")[2]


def signature_of(builder: Callable) -> inspect.Signature:
    return inspect.signature(builder)


def accepts_any(sig: inspect.Signature) -> bool:
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())


def keyword_names(sig: inspect.Signature) -> list[str]:
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [name for name, p in sig.parameters.items() if p.kind in kinds]


def own_keys(node: DictConfig, eva_keys: set[str]) -> dict:
    """The builder's keyword arguments: the node without eva's and Hydra's keys, resolved."""
    values = OmegaConf.to_container(node, resolve=True, enum_to_str=True)
    return {k: v for k, v in values.items() if k not in eva_keys and k not in HYDRA_KEYS}


# ------------------------------------------------------------------------- type checks


def _literal_choices(annotation) -> tuple | None:
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    return None


def _fixed_length(annotation) -> int | None:
    """N for tuple[int, int, int] (a list argument must have N values), else None."""
    if typing.get_origin(annotation) is tuple:
        args = typing.get_args(annotation)
        if args and Ellipsis not in args:
            return len(args)
    return None


def _plain(annotation):
    """An annotation OmegaConf can check (int, float, bool, str, lists of those, Optional
    of those), else Any: a builder's exotic types are left to the builder."""
    simple = (int, float, bool, str)
    if annotation in simple:
        return annotation
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (list, tuple, typing.List, typing.Tuple) and args:  # noqa: UP006
        inner = args[0]
        same = all(a == inner or a is Ellipsis for a in args)
        if inner in simple and same:
            return typing.List[inner]  # noqa: UP006  (OmegaConf 2.3 reads typing.List)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and type(None) in args:
            inner = _plain(rest[0])
            return typing.Optional[inner] if inner is not typing.Any else typing.Any  # noqa: UP045
    return typing.Any


def check_types(where: str, values: dict, sig: inspect.Signature) -> None:
    """Each given argument against its annotation: `model.width=abc` fails here, in one line."""
    fields = []
    for name, value in values.items():
        param = sig.parameters.get(name)
        if param is None or param.annotation is inspect.Parameter.empty:
            continue
        annotation = param.annotation
        if isinstance(annotation, str):  # postponed annotations: leave them to the builder
            continue
        choices = _literal_choices(annotation)
        if choices is not None:
            if value not in choices:
                allowed = ", ".join(str(c) for c in choices)
                raise EvaError(f"{where}.{name}={value!r}: expected one of {allowed}")
            continue
        size = _fixed_length(annotation)
        if size is not None and isinstance(value, list) and len(value) != size:
            raise EvaError(f"{where}.{name}={value}: expected {size} values, got {len(value)}")
        plain = _plain(annotation)
        if plain is not typing.Any:
            fields.append((name, plain, dataclasses.field(default=MISSING)))
    if not fields:
        return
    spec = dataclasses.make_dataclass("Arguments", fields)
    checked = {f[0]: values[f[0]] for f in fields}
    try:
        OmegaConf.merge(OmegaConf.structured(spec), checked)
    except ValidationError as e:
        key = str(e.full_key).split(".")[-1]
        why = str(e.msg).splitlines()[0] if e.msg else type(e).__name__
        raise EvaError(f"{where}.{key}={checked.get(key)!r}: {why}") from None


# ------------------------------------------------------------------------- building


def check_arguments(where: str, builder: Callable, given: dict, provided: dict) -> None:
    """Unknown keywords, missing required ones and wrong types, in one line each."""
    sig = signature_of(builder)
    names = keyword_names(sig)
    shown = target_name(getattr(builder, "__qualname__", str(builder)))
    if not accepts_any(sig):
        unknown = [k for k in given if k not in names]
        if unknown:
            own = [n for n in names if n not in provided] or ["none"]
            raise EvaError(
                f"{where}.{unknown[0]}: {shown} takes no argument {unknown[0]!r} "
                f"(its arguments: {', '.join(own)})"
            )
    missing = [
        name
        for name, p in sig.parameters.items()
        if p.default is inspect.Parameter.empty
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        and name not in given
        and name not in provided
    ]
    if missing:
        raise EvaError(
            f"{where}: {shown} needs {', '.join(missing)} (add {where}.{missing[0]}=...)"
        )
    check_types(where, given, sig)


def accepted(builder: Callable, provided: dict) -> dict:
    """What eva knows, limited to what the builder's signature takes."""
    sig = signature_of(builder)
    if accepts_any(sig):
        return dict(provided)
    names = set(keyword_names(sig))
    return {k: v for k, v in provided.items() if k in names}


def resolve(where: str, node: DictConfig, eva_keys: set[str], provided: dict):
    """(builder, its keyword arguments) for a group's node, checked; nothing is built."""
    builder = import_target(node.get(TARGET), where)
    given = own_keys(node, eva_keys)
    clash = sorted(set(given) & set(provided))
    if clash:
        raise EvaError(f"{where}.{clash[0]}: eva passes {clash[0]} itself; remove it from the YAML")
    provided = accepted(builder, provided)
    check_arguments(where, builder, given, provided)
    return builder, {**given, **provided}


def build(where: str, node: DictConfig, eva_keys: set[str], provided: dict):
    """Call the node's builder with its own arguments and what eva provides (those the
    signature takes: e.g. in_channels for a model, the parameters for an optimizer)."""
    builder, kwargs = resolve(where, node, eva_keys, provided)
    try:
        return builder(**kwargs)
    except ValueError as e:  # a builder rejecting an argument value
        raise EvaError(f"{where}: {target_name(node[TARGET])}: {' '.join(str(e).split())}") from e
