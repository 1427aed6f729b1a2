"""Flags generated from a typed configuration section (a dataclass), so defaults cannot drift.

A section is a dataclass whose fields are settings with defaults and a `help` in their metadata
(`dataclasses.field(default=..., metadata={'help': '...'})`), e.g.
`tff_lab.algorithms.schedules.LearningRateSchedule`. `define_section_flags(Section, 'client_lr_')`
defines one flag per field, `--client_lr_<field>`, of the field's type with the field's own
default; `section_from_flags` reads back the values that differ from the defaults, which is what
an `ExperimentConfig` section dict holds (as `aggregation` does), so config.json records only
what was changed.

The same generation makes the flags of `tff_lab.training.sections` (the `ExperimentConfig`
sections): a field's metadata may also give its `choices` (listed in the help), another `flag`
name (`None`: no flag of its own) and a `flag_default`; a tuple field is a list flag.
`section_values_from_flags` reads such a section's values back. `flag_group(title)` records the
flags defined inside it under a `--help` group, and `grouped_help` prints the groups.
"""

import collections
import contextlib
import dataclasses
import textwrap
import typing
from typing import Any, Iterator

from absl import flags

_DEFINE = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float,
           str: flags.DEFINE_string, tuple: flags.DEFINE_list}
# `--help` groups: title -> the flags defined inside `flag_group(title)`, in definition order.
GROUPS: 'collections.OrderedDict[str, list[str]]' = collections.OrderedDict()


def field_type(field: dataclasses.Field) -> type:
  """The value type of a field (`Optional[float]` -> float)."""
  kind = field.type
  if isinstance(kind, str):  # postponed annotations
    kind = {'bool': bool, 'int': int, 'float': float, 'str': str}.get(kind.replace(
        'Optional[', '').rstrip(']'), str)
  args = [a for a in typing.get_args(kind) if a is not type(None)]
  return args[0] if args else kind


def section_fields(section: type) -> list[dataclasses.Field]:
  """The fields of `section` that have a flag of their own."""
  return [f for f in dataclasses.fields(section)
          if f.init and f.metadata.get('flag', f.name) is not None]


def flag_name(field: dataclasses.Field, prefix: str = '') -> str:
  return prefix + field.metadata.get('flag', field.name)


def help_of(field: dataclasses.Field) -> str:
  """The field's help, with its choices where the section lists them."""
  text = field.metadata.get('help') or field.name
  choices = field.metadata.get('choices')
  if callable(choices):
    choices = choices()
  return f'{text} One of: {", ".join(map(str, choices))}.' if choices else text


def define_section_flags(section: type, prefix: str = '',
                         flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines `--<prefix><field>` for each field of `section` (once per process)."""
  for field in section_fields(section):
    name = flag_name(field, prefix)
    if name in flag_values:
      continue
    default = field.metadata.get('flag_default', field.default)
    if isinstance(default, tuple):
      default = list(default)
    _DEFINE[field_type(field)](name, default, help_of(field), flag_values=flag_values)


def section_values_from_flags(section: type, prefix: str = '',
                              flag_values: flags.FlagValues = flags.FLAGS) -> dict[str, Any]:
  """Every field of `section` that has a flag, at its flag's value (a list as a tuple)."""
  out = {}
  for field in section_fields(section):
    value = flag_values[flag_name(field, prefix)].value
    out[field.name] = tuple(value) if isinstance(value, list) else value
  return out


@contextlib.contextmanager
def flag_group(title: str, flag_values: flags.FlagValues = flags.FLAGS) -> Iterator[None]:
  """Records the flags defined inside the block under the `--help` group `title`."""
  before = set(flag_values)
  try:
    yield
  finally:
    group = GROUPS.setdefault(title, [])
    group.extend(n for n in flag_values if n not in before and n not in group
                 and flag_values[n].name == n)  # not short names


def add_to_group(title: str, names, flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Records defined flags under the `--help` group `title`, also when another module defined
  them first (a flag shared by several binaries, such as `--progress`)."""
  group = GROUPS.setdefault(title, [])
  group.extend(n for n in names if n in flag_values and n not in group)


def grouped_help(flag_values: flags.FlagValues = flags.FLAGS, width: int = 100) -> str:
  """`--help` text: the flags of each group under its title, with help and default."""
  lines = []
  for title, names in GROUPS.items():
    names = [n for n in names if n in flag_values]
    if not names:
      continue
    lines.append(f'{title}:')
    for name in names:
      flag = flag_values[name]
      default = '' if flag.default is None or flag.default == [] else (
          f' (default: {flag.default_as_str})')
      lines.append(textwrap.fill(f'--{name}: {flag.help}{default}', width,
                                 initial_indent='  ', subsequent_indent='      '))
    lines.append('')
  return '\n'.join(lines)


def section_from_flags(section: type, prefix: str = '',
                       flag_values: flags.FlagValues = flags.FLAGS) -> dict[str, Any]:
  """The fields of `section` whose flags differ from the fields' defaults, by field name."""
  out = {}
  for field in section_fields(section):
    value = flag_values[prefix + field.name].value
    if value != field.default:
      out[field.name] = value
  return out
