"""FedProx.

Li, Sahu, Zaheer, Sanjabi, Talwalkar, Smith, "Federated Optimization in Heterogeneous Networks",
MLSys 2020 (arXiv:1812.06127). Each client approximately minimises
h_k(w) = F_k(w) + (μ/2)·‖w − wᵗ‖², i.e. runs its optimiser on its loss plus a proximal term
pulling it towards the round's global weights wᵗ; the server averages the deltas weighted by
example count and applies them with the server optimiser. μ = 0 is FedAvg.

Composed like TFF's `build_weighted_fed_prox`, but with tff_lab's client work: TFF 0.87's
proximal term has the wrong sign (see `client_work.py`).
"""

import collections
import functools
from typing import Optional

import tensorflow_federated as tff

from tff_lab.algorithms import client_work as client_work_lib
from tff_lab.algorithms import composition
from tff_lab.algorithms import spec as spec_lib
from tff_lab.tasks import task as task_lib


def build_fedprox(task: task_lib.Task,
                  mu: float,
                  client_optimizer: tff.learning.optimizers.Optimizer,
                  server_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
                  model_aggregator=None,
                  with_attacks: bool = False,
                  loop_implementation=tff.learning.LoopImplementation.DATASET_REDUCE,
                  scheduled_client_lr: Optional[float] = None,
                  state_only: bool = False,
                  ) -> tff.learning.templates.LearningProcess:
  """Returns a FedProx process with proximal strength `mu` (≥ 0).

  Args:
    task: The task whose model is trained.
    mu: Proximal strength μ.
    client_optimizer: Local optimiser.
    server_optimizer: Applies the averaged delta; SGD with rate 1.0 by default.
    model_aggregator: A weighted `tff.aggregators` factory (weighted mean by default).
    with_attacks: Clients take `OrderedDict(data=, attack=)` inputs (see `client_work.py`).
    loop_implementation: How clients iterate their dataset.
    scheduled_client_lr: With a client learning-rate schedule, its first round's rate (see
      `client_work.build_client_work`).
    state_only: The process's state only, no client training traced (see
      `fedavg.build_fedavg`).
  """
  if mu < 0:
    raise ValueError(f'FedProx mu must be >= 0, got {mu}')
  work = client_work_lib.build_client_work(task, client_optimizer, mu, weighted=True,
                                           with_attacks=with_attacks,
                                           loop_implementation=loop_implementation,
                                           scheduled_client_lr=scheduled_client_lr,
                                           state_only=state_only)
  return composition.compose_with_client_work(task, work, server_optimizer, model_aggregator,
                                              state_only=state_only)


def _build_process(task, client_optimizer, server_optimizer, model_aggregator=None,
                   with_attacks=False, mu=0.0, scheduled_client_lr=None, state_only=False):
  return build_fedprox(task, mu, client_optimizer, server_optimizer,
                       model_aggregator=model_aggregator, with_attacks=with_attacks,
                       scheduled_client_lr=scheduled_client_lr, state_only=state_only)


SPEC = spec_lib.AlgorithmSpec(
    name='fedprox',
    description='FedProx: local SGD on F_k(w) + (μ/2)‖w − wᵗ‖² (Li et al., MLSys 2020)',
    build_process=_build_process,
    build_state_process=functools.partial(_build_process, state_only=True),
    build_client_work=functools.partial(client_work_lib.build_client_work, weighted=True),
    weighted=True,
    hparams=collections.OrderedDict(mu=spec_lib.Hyperparameter(
        0.0, 'Proximal strength μ (0: FedAvg).', minimum=0.0)),
    local_step=spec_lib.PROXIMAL_SGD, supports_client_lr_schedule=True)
