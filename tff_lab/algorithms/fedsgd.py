"""Federated SGD.

McMahan et al., AISTATS 2017 (arXiv:1602.05629), §2: each sampled client computes the gradient of
its mean loss over *all* its examples at the global weights (one gradient, however the data is
batched); the server averages the gradients weighted by example count and takes one step of the
server optimiser. With server SGD at rate α this is θ ← θ − α·Σ_k (n_k/n)·∇L_k(θ), i.e. one step
of centralised gradient descent over the union of the sampled clients' data (tested in
tests/algorithms/test_fedsgd.py against NumPy).

`build_fedsgd_client_work` is the client work alone, for round runners that aggregate outside TFF
(`tff_lab.algorithms.secure_rounds`).
"""

from typing import Optional

import tensorflow_federated as tff
# TFF exports no builder for FedSGD's client work alone; this is the one `build_fed_sgd` composes.
from tensorflow_federated.python.learning.algorithms import fed_sgd as tff_fed_sgd

from tff_lab.algorithms import spec as spec_lib
from tff_lab.tasks import task as task_lib


def build_fedsgd(task: task_lib.Task,
                 server_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
                 model_aggregator=None,
                 loop_implementation=tff.learning.LoopImplementation.DATASET_REDUCE,
                 ) -> tff.learning.templates.LearningProcess:
  """Returns TFF's FedSGD process for `task` (server SGD with rate 0.1 by default)."""
  server_optimizer = server_optimizer or tff.learning.optimizers.build_sgdm(learning_rate=0.1)
  return tff.learning.algorithms.build_fed_sgd(
      task.tff_model_fn, server_optimizer_fn=server_optimizer, model_aggregator=model_aggregator,
      loop_implementation=loop_implementation)


def build_fedsgd_client_work(
    task: task_lib.Task,
    loop_implementation=tff.learning.LoopImplementation.DATASET_REDUCE,
) -> tff.learning.templates.ClientWorkProcess:
  """The client work of `build_fedsgd(task)`: TFF's own, with its default metrics aggregation."""
  return tff_fed_sgd._build_fed_sgd_client_work(  # pylint: disable=protected-access
      task.tff_model_fn, tff.learning.metrics.sum_then_finalize,
      loop_implementation=loop_implementation)


def _build_process(task, client_optimizer, server_optimizer, model_aggregator=None,
                   with_attacks=False):
  del client_optimizer  # FedSGD's clients compute one gradient; they have no optimiser
  if with_attacks:
    raise ValueError('update attacks are not supported with --algorithm=fedsgd')
  return build_fedsgd(task, server_optimizer, model_aggregator=model_aggregator)


def _build_client_work(task, client_optimizer, with_attacks=False):
  del client_optimizer
  if with_attacks:
    raise ValueError('update attacks are not supported with --algorithm=fedsgd')
  return build_fedsgd_client_work(task)


SPEC = spec_lib.AlgorithmSpec(
    name='fedsgd',
    description='Federated SGD: one full-batch gradient per client (McMahan et al. 2017, §2)',
    build_process=_build_process, build_client_work=_build_client_work,
    weighted=True, local_step=None, sends_model_delta=False)
