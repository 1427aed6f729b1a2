"""Aggregation flags, generated from `tff_lab.aggregators.AggregationSettings`.

One flag per setting, same name and default (`--aggregator`, `--trim_fraction`, `--clip_norm`,
`--adaptive_clip`, `--compression`, `--bits`, `--dp`, `--noise_multiplier`,
`--secure_aggregation`, `--secagg_threshold`, `--secagg_active`, ...). Names are strings, not
enums, so a bad one gets the one-line error of `validate_aggregation_settings` rather than absl's
usage dump.

A registered aggregator (`tff_lab.aggregators.register`) gets `--<name>_<option>` flags from its
factory builder's signature, as tasks do; `define_aggregation_flags()` defines those of the
aggregators registered since its last call (a console script calls it again after importing its
`--plugin` modules). With `--aggregator=<name>` its options, defaults included, are the setting
`aggregator_options`; setting another aggregator's flag is refused.
"""

import dataclasses
import typing
from typing import Any

from absl import flags

from tff_lab.aggregators import registry
from tff_lab.aggregators import stack
from tff_lab.flags import task_flags

# Settings that are derived, not flags (`aggregator_options` are the registered aggregator's flags).
DERIVED = ('clients_per_round', 'num_dropped', 'aggregator_options')
_DEFINED: set[str] = set()  # registered aggregators whose flags this process has defined
_SETTINGS_DEFINED = []  # non-empty once the settings' flags are defined

_HELP = {
    'aggregator': 'How the server combines updates: mean|median|trimmed_mean|geometric_median|'
                  'krum (robust rules weigh clients equally).',
    'trim_fraction': 'Trimmed mean: fraction dropped at each end per coordinate, in [0, 0.5).',
    'krum_f': 'Krum: assumed Byzantine clients per round f; needs reporting clients > 2f+2.',
    'multi_krum_m': 'Multi-Krum: average the m best-scored updates (1 = Krum), m <= n - f.',
    'gm_passes': 'geometric_median (RFA): smoothed-Weiszfeld mean passes per round.',
    'clip_norm': 'L2 clip of each client update (the initial clip with --adaptive_clip or '
                 '--dp=adaptive); unset: no clipping.',
    'adaptive_clip': 'Adapt the (non-private) clip to the --clip_quantile quantile of norms.',
    'clip_quantile': 'Target quantile of --adaptive_clip, in (0, 1).',
    'compression': 'Client upload encoding: none|quantize|topk|random_mask.',
    'bits': 'Bits per coordinate of --compression=quantize, in [1, 16].',
    'rotation': 'Random Hadamard rotation before --compression=quantize.',
    'topk_fraction': 'Fraction of coordinates --compression=topk sends, in (0, 1).',
    'mask_fraction': 'Fraction of coordinates --compression=random_mask sends, in (0, 1).',
    'dp': 'Differential privacy: none|fixed|adaptive (clipping).',
    'noise_multiplier': 'DP noise multiplier z (> 0); only with --dp.',
    'secure_aggregation': 'Sum client updates with the secure aggregation protocol (Bonawitz '
                          'et al. 2017: pairwise masks, dropout recovery; mean only).',
    'secagg_threshold': 'Secure aggregation: Shamir threshold t, a strict majority of '
                        'clients_per_round (2t > n; default: the least one); rounds with fewer '
                        'reporting clients abort.',
    'secagg_range': 'Secure aggregation: per-coordinate range of the fixed-point encoding of '
                    'the update (weight x update when weighted); default: clip_norm where it '
                    'bounds every coordinate, else 100 (10^4 weighted).',
    'secagg_active': 'Secure aggregation against an active server: signed keys under a '
                     'simulated Ed25519 PKI and the consistency-check round (Bonawitz et al.).',
    'secagg_private_metrics': 'Secure aggregation also sums the training metrics and example '
                              'counts in the masked vector (one TFF call per client).',
}


def setting_fields() -> list[dataclasses.Field]:
  return [f for f in dataclasses.fields(stack.AggregationSettings) if f.name not in DERIVED]


def setting_type(field: dataclasses.Field) -> type:
  """The value type of a setting (`Optional[float]` -> float)."""
  args = [a for a in typing.get_args(field.type) if a is not type(None)]
  return args[0] if args else field.type


def define_aggregation_flags() -> None:
  """Defines the settings' flags (once), and those of aggregators registered since."""
  define = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float,
            str: flags.DEFINE_string}
  if not _SETTINGS_DEFINED:
    for field in setting_fields():
      help_text = _HELP.get(field.name, field.name)
      if field.name == 'aggregator':
        help_text += ' Or an aggregator registered with tff_lab.aggregators.register (--plugin).'
      define[setting_type(field)](field.name, field.default, help_text)
    _SETTINGS_DEFINED.append(True)
  for name in registry.names():
    if name not in _DEFINED:
      task_flags.define_option_flags(name, registry.option_specs(name), f'Aggregator {name}')
      _DEFINED.add(name)


def _option_flag(name: str, option: str) -> str:
  return f'{name}_{option}'


def aggregation_from_flags() -> dict[str, Any]:
  """The aggregation settings that differ from their defaults (for ExperimentConfig).

  With a registered `--aggregator`, also `aggregator_options`: all of its options.

  Raises:
    ValueError: If another registered aggregator's flag was set on the command line.
  """
  settings = {f.name: flags.FLAGS[f.name].value for f in setting_fields()
              if flags.FLAGS[f.name].value != f.default}
  chosen = flags.FLAGS['aggregator'].value
  for name in registry.names():
    flag_names = [_option_flag(name, o) for o in registry.option_specs(name)]
    if name == chosen:
      missing = [f for f in flag_names if f not in flags.FLAGS]
      if missing:
        raise ValueError(f'aggregator {name!r} was registered after its flags were defined (no '
                         f'--{missing[0]}): register it in a --plugin module')
      settings['aggregator_options'] = {o: flags.FLAGS[f].value for o, f in
                                        zip(registry.option_specs(name), flag_names)}
      continue
    for flag in flag_names:
      if flag in flags.FLAGS and flags.FLAGS[flag].present:
        raise ValueError(f'--{flag} is set but --aggregator={chosen}')
  return settings
