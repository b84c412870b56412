"""A complete, process-stable description of a module tree (a backbone, or an augmentation pipeline of torchvision
transforms), for keys of caches that must miss whenever what the modules compute could differ."""
from __future__ import annotations

import ast
import enum
import functools
import hashlib
import inspect
import itertools
import json
import textwrap

import numpy as np
import torch
from torch import nn

# Libraries whose code a cache key pins by their version; other module classes (petseg's own) are
# identified by a digest of their code instead.
VERSIONED = ("torch", "torchvision", "builtins")


def module_description(module: nn.Module) -> list:
    """Every submodule (the module itself first) as [name, type, hyperparameters, extra_repr, tensors, hooks, code].

    Hyperparameters are all public attributes and `__constants__` (kernel, stride, padding, dilation, groups,
    ceil_mode, eps, momentum, affine, align_corners, a transform's degrees, p or sigma...); tensors, which
    parameters and buffers it has with their shapes (None where one is declared absent, e.g. no bias); hooks,
    its forward hooks by name; code, a digest of its classes' code unless torch or torchvision defines them.
    The same for the same modules built again, in any process: no memory addresses, sets and dicts sorted.
    """
    return _plain(module)


def _module_entry(name: str, module: nn.Module, path: tuple) -> list:
    cls = type(module)
    attributes = {key: value for key, value in vars(module).items() if not key.startswith("_") and key != "training"}
    attributes.update({key: getattr(module, key, None) for key in getattr(cls, "__constants__", ())})
    # The registries keep None for a declared but absent tensor (a conv without bias): its absence counts.
    tensors = {key: None if tensor is None else [list(tensor.shape), str(tensor.dtype)]
               for key, tensor in itertools.chain(module._parameters.items(), module._buffers.items())}
    hooks = [_plain(hook, path) for hook in itertools.chain(module._forward_pre_hooks.values(),
                                                              module._forward_hooks.values())]
    code = [[_qualified(base), _code_digest(base)] for base in cls.__mro__
            if base.__module__.split(".")[0] not in VERSIONED]
    return [name, _qualified(cls), _plain(attributes, path), module.extra_repr(), tensors, hooks, code]


def _qualified(value) -> str:
    return f"{value.__module__}.{value.__qualname__}"


def _plain(value, path: tuple = ()):
    """value as JSON-safe data that is the same in every process: modules described, types and functions by
    name, enums by member, dicts and sets sorted, arrays by content, other objects by type and public attributes."""
    if id(value) in path:  # an attribute pointing back up the tree
        return "<cycle>"
    path = (*path, id(value))
    if isinstance(value, enum.Enum):
        return f"{_qualified(type(value))}.{value.name}"
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, nn.Module):  # a tree, or a module held outside the registries (a Compose's list)
        return [_module_entry(name, child, path) for name, child in value.named_modules()]
    if isinstance(value, (list, tuple)):
        return [_plain(item, path) for item in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_plain(item, path) for item in value), key=json.dumps)
    if isinstance(value, dict):
        return sorted(([_plain(key, path), _plain(item, path)] for key, item in value.items()), key=json.dumps)
    if isinstance(value, (torch.Tensor, np.ndarray)):
        array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
        return [list(array.shape), str(array.dtype), hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()]
    if isinstance(value, (torch.dtype, torch.device)):
        return str(value)
    if isinstance(value, type) or (callable(value) and hasattr(value, "__qualname__")):
        return _qualified(value)
    public = {key: item for key, item in getattr(value, "__dict__", {}).items() if not key.startswith("_")}
    return [_qualified(type(value)), _plain(public, path)]


@functools.cache
def _code_digest(cls: type) -> str | None:
    """sha256 of a class's code without its docstrings, comments or layout: a change of what it computes
    changes it, an edited comment does not."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):  # no source file (defined interactively): its name and attributes still count
        return None
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()
