"""Prefixed optimiser flags, generated from `tff.learning.optimizers` builder signatures.

`define_optimizer_flags('client')` defines `--client_optimizer`, `--client_learning_rate` and, for
every optimiser's hyperparameters, `--client_<optimizer>_<hparam>` (e.g. `--client_sgdm_momentum`,
`--server_adam_beta_1`), as google-research/federated's `optimizer_utils` does.
`optimizer_settings_from_flags('client')` reads back only the chosen optimiser's hyperparameters,
and refuses flags set for an optimiser that was not chosen.
"""

from typing import Any

from absl import flags

from tff_lab.algorithms import optimizers as optimizers_lib


def _hparam_flag(prefix: str, optimizer: str, hparam: str) -> str:
  return f'{prefix}_{optimizer}_{hparam}'


def define_optimizer_flags(prefix: str, default_optimizer: str = 'sgd',
                           default_learning_rate: float = 0.1) -> None:
  """Defines the `--<prefix>_*` optimiser flags; `--<prefix>_optimizer` and
  `--<prefix>_learning_rate` only where not defined yet (tff-lab-run generates those from its
  config's algorithm section)."""
  if f'{prefix}_optimizer' not in flags.FLAGS:
    flags.DEFINE_string(f'{prefix}_optimizer', default_optimizer,
                        f'The {prefix} optimizer: one of {optimizers_lib.optimizer_names()}.')
  if f'{prefix}_learning_rate' not in flags.FLAGS:
    flags.DEFINE_float(f'{prefix}_learning_rate', default_learning_rate,
                       f'Learning rate of the {prefix} optimizer.')
  for name in optimizers_lib.optimizer_names():
    for hparam, default in optimizers_lib.optimizer_hparams(name).items():
      flags.DEFINE_float(_hparam_flag(prefix, name, hparam), default,
                         f'{hparam} of the {prefix} {name} optimizer.')


def optimizer_settings_from_flags(prefix: str) -> dict[str, Any]:
  """Returns `{<prefix>_optimizer, <prefix>_learning_rate, <prefix>_optimizer_hparams}`.

  Raises:
    ValueError: If a hyperparameter flag of a non-chosen optimizer was set on the command line.
  """
  chosen = flags.FLAGS[f'{prefix}_optimizer'].value
  if chosen not in optimizers_lib.optimizer_names():
    raise ValueError(f'unknown {prefix} optimizer {chosen!r}; choose one of '
                     f'{optimizers_lib.optimizer_names()}')
  for name in optimizers_lib.optimizer_names():
    if name == chosen:
      continue
    for hparam in optimizers_lib.optimizer_hparams(name):
      flag = _hparam_flag(prefix, name, hparam)
      if flags.FLAGS[flag].present:
        raise ValueError(f'--{flag} is set but --{prefix}_optimizer={chosen}')
  hparams = {h: flags.FLAGS[_hparam_flag(prefix, chosen, h)].value
             for h in optimizers_lib.optimizer_hparams(chosen)}
  return {f'{prefix}_optimizer': chosen,
          f'{prefix}_learning_rate': flags.FLAGS[f'{prefix}_learning_rate'].value,
          f'{prefix}_optimizer_hparams': hparams}
