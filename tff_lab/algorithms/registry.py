"""The algorithms the experiment binary, configs and notebooks accept, by name.

Each algorithm is one `tff_lab.algorithms.spec.AlgorithmSpec`, defined in its own module and
registered here with one line (see "Adding an algorithm" in `spec.py`). FedOpt (FedAdam,
FedYogi, FedAdagrad, FedAvgM) is `fedavg` with a non-SGD `--server_optimizer`.
"""

import collections
from typing import Any, Optional

import tensorflow_federated as tff

from tff_lab.algorithms import afl
from tff_lab.algorithms import apfl
from tff_lab.algorithms import ditto
from tff_lab.algorithms import fedavg
from tff_lab.algorithms import fedbn
from tff_lab.algorithms import feddyn
from tff_lab.algorithms import fednova
from tff_lab.algorithms import fedprox
from tff_lab.algorithms import fedrep
from tff_lab.algorithms import fedsgd
from tff_lab.algorithms import mime
from tff_lab.algorithms import qffl
from tff_lab.algorithms import scaffold
from tff_lab.algorithms import spec as spec_lib
from tff_lab.tasks import task as task_lib

for _spec in (fedavg.FEDAVG, fedavg.FEDAVG_UNWEIGHTED, fedsgd.SPEC, fedprox.SPEC, scaffold.SPEC,
              fednova.SPEC, feddyn.SPEC, mime.SPEC):
  spec_lib.register(_spec)
spec_lib.register(ditto.SPEC)
spec_lib.register(fedrep.FEDREP)
spec_lib.register(fedrep.FEDPER)
spec_lib.register(qffl.SPEC)
spec_lib.register(afl.SPEC)
spec_lib.register(apfl.SPEC)
spec_lib.register(fedbn.SPEC)

# The built-in algorithms; `spec.names()` also lists those registered later.
ALGORITHMS = spec_lib.names()
get = spec_lib.get
names = spec_lib.names
hparam_specs = spec_lib.hparam_specs


def check_algorithm(name: str) -> None:
  """Raises a one-line ValueError, listing the known algorithms, if `name` is not registered."""
  spec_lib.get(name)


def hparams_of(config) -> 'collections.OrderedDict[str, Any]':
  """The hyperparameters of `config.algorithm`: `config.algorithm_hparams`, defaults filled in.

  Raises:
    ValueError: One line, for a hyperparameter the algorithm does not take or a bad value.
  """
  return spec_lib.get(config.algorithm).resolve_hparams(config.algorithm_hparams)


def create_learning_process(name: str, task: task_lib.Task,
                            client_optimizer: Optional[tff.learning.optimizers.Optimizer],
                            server_optimizer: Optional[tff.learning.optimizers.Optimizer],
                            hparams: Optional[dict] = None, model_aggregator=None,
                            with_attacks: bool = False, state_only: bool = False,
                            scheduled_client_lr: Optional[float] = None,
                            runs_elsewhere: bool = False,
                            ) -> tff.learning.templates.LearningProcess:
  """Builds the learning process for algorithm `name` (FedSGD ignores the client optimiser).

  `hparams` are its hyperparameters (e.g. `{'mu': 0.1}` for FedProx; the ones not given take
  their defaults). With `with_attacks`, clients take `OrderedDict(data=, attack=)` inputs (see
  `client_work.py`); FedSGD does not support it (its clients send gradients, not local models).
  With `scheduled_client_lr` (the first round's rate of a client learning-rate schedule), the
  clients read each round's rate from the client work's state (`tff_lab.algorithms.schedules`).
  With `runs_elsewhere` (the rounds run on a backend that never calls `process.next`, e.g.
  `--simulation=fused`), an algorithm with a `build_state_process` builds that: the same state,
  with no client training traced.

  Raises:
    ValueError: For an unknown hyperparameter or a bad value; for an algorithm whose rounds run
      through its spec's own runner (SCAFFOLD, with its client store; FedNova), unless
      `state_only`: its process only serves for the state's structure (`initialize`,
      `get_model_weights`, checkpoints).
  """
  spec = spec_lib.get(name)
  if spec.build_runner is not None and not state_only:
    why = (f'keeps client state {list(spec.client_state)} and ' if spec.client_state else '')
    raise ValueError(f'--algorithm={name} {why}runs its rounds through its own runner, not '
                     'process.next: run it with tff_lab.training.run_experiment')
  build = (spec.build_state_process if runs_elsewhere and spec.build_state_process is not None
           else spec.build_process)
  return build(task, client_optimizer, server_optimizer,
                            model_aggregator=model_aggregator, with_attacks=with_attacks,
                            **_schedule_kwargs(spec, scheduled_client_lr),
                            **spec.resolve_hparams(hparams or {}))


def _schedule_kwargs(spec: spec_lib.AlgorithmSpec, scheduled_client_lr: Optional[float]) -> dict:
  if scheduled_client_lr is None:
    return {}
  if not spec.supports_client_lr_schedule:
    raise ValueError(f'--algorithm={spec.name} does not take a client learning-rate schedule')
  return {'scheduled_client_lr': float(scheduled_client_lr)}


def create_client_work(name: str, task: task_lib.Task,
                       client_optimizer: Optional[tff.learning.optimizers.Optimizer],
                       hparams: Optional[dict] = None, with_attacks: bool = False,
                       scheduled_client_lr: Optional[float] = None,
                       ) -> tff.learning.templates.ClientWorkProcess:
  """The client work that `create_learning_process(name, ...)` composes, on its own.

  For round runners that run the clients in TFF and aggregate outside it
  (`tff_lab.algorithms.secure_rounds`). FedSGD ignores the client optimiser.
  """
  spec = spec_lib.get(name)
  return spec.build_client_work(task, client_optimizer, with_attacks=with_attacks,
                                **_schedule_kwargs(spec, scheduled_client_lr),
                                **spec.resolve_hparams(hparams or {}))
