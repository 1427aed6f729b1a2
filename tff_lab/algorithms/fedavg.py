"""Federated Averaging, weighted and unweighted; with an adaptive server optimiser, FedOpt.

McMahan, Moore, Ramage, Hampson, Agüera y Arcas, "Communication-Efficient Learning of Deep
Networks from Decentralized Data", AISTATS 2017 (arXiv:1602.05629). With a server optimiser other
than SGD(1.0) this is FedOpt: Reddi et al., "Adaptive Federated Optimization", ICLR 2021
(arXiv:2003.00295).

Each round, every sampled client runs local SGD (the client optimiser) from the global weights
over `num_epochs` of its data, and returns its model delta; the server averages the deltas
(weighted by example count, or unweighted) and applies the average as a pseudo-gradient with the
server optimiser. The process is TFF's own `build_weighted_fed_avg`/`build_unweighted_fed_avg`;
with Byzantine clients simulated (`with_attacks`), the same process is composed around tff_lab's
client work (`client_work.py`, tested equal to TFF's for honest clients).

`build_fedavg_client_work` is the client work alone, for round runners that aggregate outside TFF
(`tff_lab.algorithms.secure_rounds`).
"""

import functools
from typing import Optional

import tensorflow as tf
import tensorflow_federated as tff

from tff_lab.algorithms import client_work as client_work_lib
from tff_lab.algorithms import composition
from tff_lab.algorithms import spec as spec_lib
from tff_lab.tasks import task as task_lib


def build_fedavg(task: task_lib.Task,
                 client_optimizer: tff.learning.optimizers.Optimizer,
                 server_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
                 weighted: bool = True,
                 model_aggregator=None,
                 with_attacks: bool = False,
                 loop_implementation=tff.learning.LoopImplementation.DATASET_REDUCE,
                 scheduled_client_lr: Optional[float] = None,
                 state_only: bool = False,
                 ) -> tff.learning.templates.LearningProcess:
  """Returns a FedAvg (or FedOpt) learning process for `task`.

  Args:
    task: The task whose `tff_model_fn` is trained.
    client_optimizer: Local optimiser.
    server_optimizer: Applies the averaged delta; defaults to SGD with learning rate 1.0 (plain
      FedAvg).
    weighted: Weight client deltas by example count (True) or equally (False).
    model_aggregator: Optional `tff.aggregators` factory for the deltas (weighted or unweighted,
      matching `weighted`; always weighted with `with_attacks`, where unweighted averaging gives
      every client weight 1).
    with_attacks: Clients take `OrderedDict(data=, attack=)` inputs (see `client_work.py`).
    loop_implementation: How clients iterate their dataset.
    scheduled_client_lr: With a client learning-rate schedule, its first round's rate: the
      clients take each round's rate from the client work's state (`client_work.py`).
    state_only: The same process's state, initialisation and model weights, composed around a
      client work that trains nothing (`client_work.build_state_only_client_work`; no client
      training is traced), as a `composition.StateOnlyProcess`: for backends that never call
      `next`.
  """
  server_optimizer = server_optimizer or tff.learning.optimizers.build_sgdm(learning_rate=1.0)
  if with_attacks or scheduled_client_lr is not None:
    work = client_work_lib.build_client_work(task, client_optimizer, mu=0.0, weighted=weighted,
                                             with_attacks=with_attacks,
                                             loop_implementation=loop_implementation,
                                             scheduled_client_lr=scheduled_client_lr,
                                             state_only=state_only)
    return composition.compose_with_client_work(task, work, server_optimizer, model_aggregator,
                                                state_only=state_only)
  if state_only:  # TFF's composition below, around a client work with its state
    return _state_only_tff_fedavg(task, client_optimizer, server_optimizer, weighted,
                                  model_aggregator)
  if weighted:
    return tff.learning.algorithms.build_weighted_fed_avg(
        task.tff_model_fn, client_optimizer_fn=client_optimizer,
        server_optimizer_fn=server_optimizer, model_aggregator=model_aggregator,
        loop_implementation=loop_implementation)
  return tff.learning.algorithms.build_unweighted_fed_avg(
      task.tff_model_fn, client_optimizer_fn=client_optimizer,
      server_optimizer_fn=server_optimizer, model_aggregator=model_aggregator,
      loop_implementation=loop_implementation)


def _state_only_tff_fedavg(task, client_optimizer, server_optimizer, weighted, model_aggregator):
  """`build_weighted_fed_avg`'s (`build_unweighted_fed_avg`'s) process, with the state of its
  `build_model_delta_client_work` (the client optimiser's hyperparameters) and no training."""
  whimsy = client_optimizer.initialize(tf.TensorSpec(shape=(), dtype=tf.float32))
  work = client_work_lib.build_state_only_client_work(
      task, client_optimizer.get_hparams(whimsy), with_hparams=True)
  if weighted:
    factory = model_aggregator or tff.aggregators.MeanFactory()
  else:
    factory = tff.aggregators.as_weighted_aggregator(
        model_aggregator or tff.aggregators.UnweightedMeanFactory())
  return composition.compose_with_client_work(task, work, server_optimizer, factory,
                                              state_only=True)


def build_fedavg_client_work(task: task_lib.Task,
                             client_optimizer: tff.learning.optimizers.Optimizer,
                             weighted: bool = True,
                             with_attacks: bool = False,
                             loop_implementation=tff.learning.LoopImplementation.DATASET_REDUCE,
                             scheduled_client_lr: Optional[float] = None,
                             ) -> tff.learning.templates.ClientWorkProcess:
  """The client work of `build_fedavg(task, client_optimizer, weighted=..., with_attacks=...)`.

  Without attacks this is the `ClientWorkProcess` TFF's `build_weighted_fed_avg` /
  `build_unweighted_fed_avg` compose (`build_model_delta_client_work` with example-count or
  uniform client weighting and the default `sum_then_finalize` metrics); with attacks, tff_lab's
  (`client_work.py`), as in `build_fedavg`; with a client learning-rate schedule, tff_lab's too.
  """
  if with_attacks or scheduled_client_lr is not None:
    return client_work_lib.build_client_work(task, client_optimizer, mu=0.0, weighted=weighted,
                                             with_attacks=with_attacks,
                                             loop_implementation=loop_implementation,
                                             scheduled_client_lr=scheduled_client_lr)
  weighting = (tff.learning.ClientWeighting.NUM_EXAMPLES if weighted
               else tff.learning.ClientWeighting.UNIFORM)
  return tff.learning.templates.build_model_delta_client_work(
      task.tff_model_fn, client_optimizer, client_weighting=weighting,
      loop_implementation=loop_implementation)


FEDAVG = spec_lib.AlgorithmSpec(
    name='fedavg',
    description='Federated Averaging, clients weighted by example count (McMahan et al. 2017); '
    'FedOpt with a non-SGD server optimiser (Reddi et al. 2021)',
    build_process=functools.partial(build_fedavg, weighted=True),
    build_state_process=functools.partial(build_fedavg, weighted=True, state_only=True),
    build_client_work=functools.partial(build_fedavg_client_work, weighted=True),
    weighted=True, local_step=spec_lib.PLAIN_SGD, supports_client_lr_schedule=True)

FEDAVG_UNWEIGHTED = spec_lib.AlgorithmSpec(
    name='fedavg_unweighted',
    description='Federated Averaging with every client weighted equally',
    build_process=functools.partial(build_fedavg, weighted=False),
    build_state_process=functools.partial(build_fedavg, weighted=False, state_only=True),
    build_client_work=functools.partial(build_fedavg_client_work, weighted=False),
    weighted=False, local_step=spec_lib.PLAIN_SGD, supports_client_lr_schedule=True)
