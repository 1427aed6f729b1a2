"""Named `tff.learning.optimizers` and their hyperparameters.

TFF 0.87's learning processes accept only `tff.learning.optimizers.Optimizer`s (Keras optimizers
are gone). This table names each one and reads its hyperparameters from the builder's signature,
so the flag factory (`tff_lab.flags.optimizer_flags`) and configs stay in step with TFF.

`sgdm` is SGD with heavy-ball momentum (server-side it is FedAvgM, Hsu et al. 2019);
`adam`, `adagrad` and `yogi` server-side give FedAdam/FedAdagrad/FedYogi (Reddi et al.,
"Adaptive Federated Optimization", ICLR 2021, arXiv:2003.00295).
"""

import collections
import inspect
from typing import Any

import tensorflow_federated as tff

_opt = tff.learning.optimizers


def _build_sgd(learning_rate: float = 0.1):
  return _opt.build_sgdm(learning_rate=learning_rate)


def _build_sgdm(learning_rate: float = 0.1, momentum: float = 0.9):
  return _opt.build_sgdm(learning_rate=learning_rate, momentum=momentum)


OPTIMIZER_BUILDERS = collections.OrderedDict(
    sgd=_build_sgd,
    sgdm=_build_sgdm,
    adam=_opt.build_adam,
    adagrad=_opt.build_adagrad,
    yogi=_opt.build_yogi,
)


def optimizer_names() -> list[str]:
  return list(OPTIMIZER_BUILDERS)


def optimizer_hparams(name: str) -> 'collections.OrderedDict[str, Any]':
  """Hyperparameters (other than the learning rate) of optimizer `name`, with TFF's defaults."""
  _check_name(name)
  params = inspect.signature(OPTIMIZER_BUILDERS[name]).parameters.values()
  return collections.OrderedDict((p.name, p.default) for p in params if p.name != 'learning_rate')


def create_optimizer(name: str, learning_rate: float, **hparams) -> tff.learning.optimizers.Optimizer:
  """Builds optimizer `name`.

  Raises:
    ValueError: For an unknown name or hyperparameter, or a non-positive learning rate.
  """
  _check_name(name)
  if not learning_rate > 0:
    raise ValueError(f'learning rate of optimizer {name!r} must be positive, got {learning_rate}')
  unknown = sorted(set(hparams) - set(optimizer_hparams(name)))
  if unknown:
    raise ValueError(f'optimizer {name!r} has no hyperparameter(s) {unknown}')
  return OPTIMIZER_BUILDERS[name](learning_rate=learning_rate, **hparams)


def _check_name(name: str) -> None:
  if name not in OPTIMIZER_BUILDERS:
    raise ValueError(f'unknown optimizer {name!r}; choose one of {optimizer_names()}')
