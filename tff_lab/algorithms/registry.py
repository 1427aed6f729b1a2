"""The algorithm names the experiment binary and configs accept.

`--algorithm` takes one of `ALGORITHMS`; FedOpt (FedAdam, FedYogi, FedAdagrad, FedAvgM) is
`fedavg` with a non-SGD `--server_optimizer`.
"""

from typing import Optional

import tensorflow_federated as tff

from tff_lab.algorithms import client_work as client_work_lib
from tff_lab.algorithms import fedavg
from tff_lab.algorithms import fedprox
from tff_lab.algorithms import fedsgd
from tff_lab.tasks import task as task_lib

ALGORITHMS = ('fedavg', 'fedavg_unweighted', 'fedsgd', 'fedprox')


def check_algorithm(name: str) -> None:
  if name not in ALGORITHMS:
    raise ValueError(f'unknown algorithm {name!r}; choose one of {list(ALGORITHMS)}')


def create_learning_process(name: str, task: task_lib.Task,
                            client_optimizer: Optional[tff.learning.optimizers.Optimizer],
                            server_optimizer: Optional[tff.learning.optimizers.Optimizer],
                            mu: float = 0.0, model_aggregator=None, with_attacks: bool = False
                            ) -> tff.learning.templates.LearningProcess:
  """Builds the learning process for algorithm `name` (FedSGD ignores the client optimiser).

  With `with_attacks`, clients take `OrderedDict(data=, attack=)` inputs (see
  `client_work.py`); FedSGD does not support it (its clients send gradients, not local models).
  """
  check_algorithm(name)
  if name == 'fedsgd':
    if with_attacks:
      raise ValueError('update attacks are not supported with --algorithm=fedsgd')
    return fedsgd.build_fedsgd(task, server_optimizer, model_aggregator=model_aggregator)
  if name == 'fedprox':
    return fedprox.build_fedprox(task, mu, client_optimizer, server_optimizer,
                                 model_aggregator=model_aggregator, with_attacks=with_attacks)
  return fedavg.build_fedavg(task, client_optimizer, server_optimizer,
                             weighted=(name == 'fedavg'), model_aggregator=model_aggregator,
                             with_attacks=with_attacks)


def create_client_work(name: str, task: task_lib.Task,
                       client_optimizer: Optional[tff.learning.optimizers.Optimizer],
                       mu: float = 0.0, with_attacks: bool = False
                       ) -> tff.learning.templates.ClientWorkProcess:
  """The client work that `create_learning_process(name, ...)` composes, on its own.

  For round runners that run the clients in TFF and aggregate outside it
  (`tff_lab.algorithms.secure_rounds`). FedSGD ignores the client optimiser.
  """
  check_algorithm(name)
  if name == 'fedsgd':
    if with_attacks:
      raise ValueError('update attacks are not supported with --algorithm=fedsgd')
    return fedsgd.build_fedsgd_client_work(task)
  if name == 'fedprox':  # the client work `fedprox.build_fedprox` composes
    return client_work_lib.build_client_work(task, client_optimizer, mu, weighted=True,
                                             with_attacks=with_attacks)
  return fedavg.build_fedavg_client_work(task, client_optimizer, weighted=(name == 'fedavg'),
                                         with_attacks=with_attacks)
