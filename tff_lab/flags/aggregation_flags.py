"""Aggregation flags, generated from `tff_lab.aggregators.AggregationSettings`.

One flag per setting, same name and default (`--aggregator`, `--trim_fraction`, `--clip_norm`,
`--adaptive_clip`, `--compression`, `--bits`, `--dp`, `--noise_multiplier`,
`--secure_aggregation`, `--secagg_threshold`, `--secagg_active`, ...). Names are strings, not
enums, so a bad one gets the one-line error of `validate_aggregation_settings` rather than absl's
usage dump.
"""

import dataclasses
import typing
from typing import Any

from absl import flags

from tff_lab.aggregators import stack

# Settings that are derived, not flags.
DERIVED = ('clients_per_round', 'num_dropped')

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
  define = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float,
            str: flags.DEFINE_string}
  for field in setting_fields():
    define[setting_type(field)](field.name, field.default, _HELP.get(field.name, field.name))


def aggregation_from_flags() -> dict[str, Any]:
  """The aggregation settings that differ from their defaults (for ExperimentConfig)."""
  return {f.name: flags.FLAGS[f.name].value for f in setting_fields()
          if flags.FLAGS[f.name].value != f.default}
