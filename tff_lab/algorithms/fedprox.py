"""FedProx.

Li, Sahu, Zaheer, Sanjabi, Talwalkar, Smith, "Federated Optimization in Heterogeneous Networks",
MLSys 2020 (arXiv:1812.06127). Each client approximately minimises
h_k(w) = F_k(w) + (μ/2)·‖w − wᵗ‖², i.e. runs its optimiser on its loss plus a proximal term
pulling it towards the round's global weights wᵗ; the server averages the deltas weighted by
example count and applies them with the server optimiser. μ = 0 is FedAvg.

Composed like TFF's `build_weighted_fed_prox` (broadcast, client work, weighted mean, optimiser
finalizer), but with tff_lab's client work: TFF 0.87's proximal term has the wrong sign (see
`client_work.py`).
"""

from typing import Optional

import numpy as np
import tensorflow_federated as tff

from tff_lab.algorithms import client_work as client_work_lib
from tff_lab.tasks import task as task_lib


def build_fedprox(task: task_lib.Task,
                  mu: float,
                  client_optimizer: tff.learning.optimizers.Optimizer,
                  server_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
                  model_aggregator=None,
                  loop_implementation=tff.learning.LoopImplementation.DATASET_REDUCE,
                  ) -> tff.learning.templates.LearningProcess:
  """Returns a FedProx process with proximal strength `mu` (≥ 0).

  Args:
    task: The task whose model is trained.
    mu: Proximal strength μ.
    client_optimizer: Local optimiser.
    server_optimizer: Applies the averaged delta; SGD with rate 1.0 by default.
    model_aggregator: A weighted `tff.aggregators` factory; `tff.aggregators.MeanFactory()` by
      default.
    loop_implementation: How clients iterate their dataset.
  """
  if mu < 0:
    raise ValueError(f'FedProx mu must be >= 0, got {mu}')
  server_optimizer = server_optimizer or tff.learning.optimizers.build_sgdm(learning_rate=1.0)

  @tff.tensorflow.computation
  def initial_model_weights_fn():
    return tff.learning.models.ModelWeights.from_model(task.tff_model_fn())

  weights_type = initial_model_weights_fn.type_signature.result
  distributor = tff.learning.templates.build_broadcast_process(weights_type)
  client_work = client_work_lib.build_client_work(task, client_optimizer, mu,
                                                  loop_implementation)
  aggregator = (model_aggregator or tff.aggregators.MeanFactory()).create(
      weights_type.trainable, tff.TensorType(np.float32))
  finalizer = tff.learning.templates.build_apply_optimizer_finalizer(server_optimizer,
                                                                     weights_type)
  return tff.learning.templates.compose_learning_process(
      initial_model_weights_fn, distributor, client_work, aggregator, finalizer)
