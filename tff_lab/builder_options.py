"""Options of a builder, read from its signature: the basis of generated `--<name>_<option>` flags.

A task builder (`tff_lab.tasks.register`) or an aggregator's factory builder
(`tff_lab.aggregators.register`) declares its options as keyword parameters with defaults. Each
option becomes a flag of the type of its default (bool, int, float or str), or, for a `None`
default, of its annotation (`Optional[float] = None`). `check_options` refuses, in one line, a
builder whose options cannot become flags: no default, `*args` / `**kwargs`, or a default whose
type is not one of those (and not inferable from the annotation). An option's help is its entry
in the builder's Google-style `Args:` docstring section, where it has one.
"""

import collections
import inspect
import re
import typing
from typing import Any, Callable, Optional

SCALAR_TYPES = (bool, int, float, str)


class Option(typing.NamedTuple):
  """One option: its default, the type of its flag and its help (from the docstring)."""
  default: Any
  type: Optional[type]  # None: not inferable (built-in builders fall back to str)
  help: str = ''


def docstring_args(builder: Callable[..., Any]) -> dict[str, str]:
  """The entries of the builder's Google-style `Args:` section, by parameter, on one line each."""
  doc = inspect.getdoc(builder) or ''
  match = re.search(r'^Args:\n(.*?)(?:^\S|\Z)', doc, re.MULTILINE | re.DOTALL)
  out, name = {}, None
  for line in (match.group(1).splitlines() if match else []):
    entry = re.match(r'^ {2,4}(\w+)(?: \(.*?\))?: ?(.*)$', line)
    if entry:
      name = entry.group(1)
      out[name] = entry.group(2).strip()
    elif name and line.strip():
      out[name] += ' ' + line.strip()
  return out


def _annotation_type(annotation) -> Optional[type]:
  if isinstance(annotation, str):  # `from __future__ import annotations`
    annotation = {'bool': bool, 'int': int, 'float': float, 'str': str}.get(
        annotation.replace('Optional[', '').rstrip(']'), None)
  if annotation in SCALAR_TYPES:
    return annotation
  args = [a for a in typing.get_args(annotation) if a is not type(None)]
  return args[0] if len(args) == 1 and args[0] in SCALAR_TYPES else None


def options(builder: Callable[..., Any], skip: tuple[str, ...] = ()
            ) -> 'collections.OrderedDict[str, Option]':
  """The builder's keyword options (except `skip`), in signature order."""
  out = collections.OrderedDict()
  helps = docstring_args(builder)
  for p in inspect.signature(builder).parameters.values():
    if p.name in skip or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
      continue
    default = None if p.default is p.empty else p.default
    if p.default is not p.empty and default is not None and type(default) in SCALAR_TYPES:
      kind = type(default)
    else:
      kind = _annotation_type(p.annotation) if default is None else None
    out[p.name] = Option(default, kind, helps.get(p.name, ''))
  return out


def check_options(builder: Callable[..., Any], what: str, skip: tuple[str, ...] = ()) -> None:
  """Raises a one-line ValueError if an option of `builder` (`what`, e.g. "task 'x'") cannot
  become a flag; TypeError if `builder` is not callable."""
  if not callable(builder):
    raise TypeError(f'{what}: the builder must be callable, got {type(builder).__name__}')
  try:
    params = inspect.signature(builder).parameters.values()
  except (TypeError, ValueError) as e:
    raise ValueError(f'{what}: cannot read the builder\'s signature ({e})') from None
  for p in params:
    if p.name in skip:
      continue
    if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
      raise ValueError(f'{what}: builder parameter {p.name!r} is *args/**kwargs; every option '
                       'must be a named parameter with a default (it becomes a flag)')
    if p.default is p.empty:
      raise ValueError(f'{what}: builder option {p.name!r} has no default; every option needs '
                       'a bool, int, float or str default (it becomes a flag)')
    if p.default is None:
      if _annotation_type(p.annotation) is None:
        raise ValueError(f'{what}: builder option {p.name!r} defaults to None without a type: '
                         'annotate it, e.g. Optional[float] = None (it becomes a flag)')
    elif type(p.default) not in SCALAR_TYPES:
      raise ValueError(f'{what}: builder option {p.name!r} defaults to {p.default!r}, a '
                       f'{type(p.default).__name__}; options need a bool, int, float or str '
                       'default (it becomes a flag)')


def check_value(what: str, option: str, spec: Option, value: Any) -> None:
  """Raises a one-line ValueError if `value` is not of the option's type (None for a None
  default; an int for a float)."""
  if value is None and spec.default is None:
    return
  kind = spec.type
  if kind is None:
    return
  ok = (isinstance(value, bool) if kind is bool
        else isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float
        else isinstance(value, int) and not isinstance(value, bool) if kind is int
        else isinstance(value, kind))
  if not ok:
    raise ValueError(f'{what} option {option!r} must be a {kind.__name__}, got {value!r}')
