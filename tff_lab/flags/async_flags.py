"""Asynchronous-simulation flags, generated from `tff_lab.simulation.asynchronous.AsyncSettings`.

One flag per field, same name, type, default and help (`--concurrency`, `--buffer_size`,
`--staleness`, `--latency_model`, `--latency_median`, `--latency_sigma`, `--latency_jitter`,
`--latency_tail_fraction`, `--latency_tail_alpha`, `--latency_file`), so a flag's default cannot
drift from the settings'. `asynchrony_from_flags()` returns the values that differ from the
defaults: `ExperimentConfig.asynchrony`. Names are strings, not enums, so a bad one gets the
settings' one-line error rather than absl's usage dump. `--simulation=async` runs FedBuff; the
latency settings also give the synchronous backends their `simulated_time`.
"""

import dataclasses
import typing
from typing import Any

from absl import flags

from tff_lab.simulation import asynchronous

_DEFINE = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float,
           str: flags.DEFINE_string}


def _type(field: dataclasses.Field) -> type:
  args = [a for a in typing.get_args(field.type) if a is not type(None)]
  return args[0] if args else field.type


def define_async_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines one flag per `AsyncSettings` field (once per process)."""
  for field in dataclasses.fields(asynchronous.AsyncSettings):
    if field.name not in flag_values:
      _DEFINE[_type(field)](field.name, field.default, field.metadata['help'],
                            flag_values=flag_values)


def asynchrony_from_flags(flag_values: flags.FlagValues = flags.FLAGS) -> dict[str, Any]:
  """The asynchronous settings whose flags differ from their defaults (for ExperimentConfig)."""
  return {f.name: flag_values[f.name].value for f in dataclasses.fields(asynchronous.AsyncSettings)
          if flag_values[f.name].value != f.default}
