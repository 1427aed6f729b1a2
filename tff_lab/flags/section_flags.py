"""Flags generated from a typed configuration section (a dataclass), so defaults cannot drift.

A section is a dataclass whose fields are settings with defaults and a `help` in their metadata
(`dataclasses.field(default=..., metadata={'help': '...'})`), e.g.
`tff_lab.algorithms.schedules.LearningRateSchedule`. `define_section_flags(Section, 'client_lr_')`
defines one flag per field, `--client_lr_<field>`, of the field's type with the field's own
default; `section_from_flags` reads back the values that differ from the defaults, which is what
an `ExperimentConfig` section dict holds (as `aggregation` does), so config.json records only
what was changed.
"""

import dataclasses
import typing
from typing import Any

from absl import flags

_DEFINE = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float,
           str: flags.DEFINE_string}


def field_type(field: dataclasses.Field) -> type:
  """The value type of a field (`Optional[float]` -> float)."""
  kind = field.type
  if isinstance(kind, str):  # postponed annotations
    kind = {'bool': bool, 'int': int, 'float': float, 'str': str}.get(kind.replace(
        'Optional[', '').rstrip(']'), str)
  args = [a for a in typing.get_args(kind) if a is not type(None)]
  return args[0] if args else kind


def _fields(section: type) -> list[dataclasses.Field]:
  return [f for f in dataclasses.fields(section) if f.init]


def define_section_flags(section: type, prefix: str = '',
                         flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines `--<prefix><field>` for each field of `section` (once per process)."""
  for field in _fields(section):
    name = prefix + field.name
    if name in flag_values:
      continue
    _DEFINE[field_type(field)](name, field.default, field.metadata.get('help', field.name),
                               flag_values=flag_values)


def section_from_flags(section: type, prefix: str = '',
                       flag_values: flags.FlagValues = flags.FLAGS) -> dict[str, Any]:
  """The fields of `section` whose flags differ from the fields' defaults, by field name."""
  out = {}
  for field in _fields(section):
    value = flag_values[prefix + field.name].value
    if value != field.default:
      out[field.name] = value
  return out
