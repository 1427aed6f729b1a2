"""Composing a learning process around tff_lab's client work.

The same four parts as TFF's `build_weighted_fed_avg` / `build_weighted_fed_prox`
(`tensorflow_federated/python/learning/algorithms/fed_avg.py`): broadcast the global weights, run
the client work, aggregate the deltas with a weighted `tff.aggregators` factory (its weights are
the client work's `update_weight`: example counts, or 1 for unweighted averaging), and apply the
aggregate with the server optimiser. Only the client work differs; see `client_work.py`.
"""

from typing import Optional

import numpy as np
import tensorflow_federated as tff

from tff_lab.tasks import task as task_lib


def compose_with_client_work(task: task_lib.Task,
                             client_work: tff.learning.templates.ClientWorkProcess,
                             server_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
                             model_aggregator=None) -> tff.learning.templates.LearningProcess:
  """Returns the learning process broadcast → `client_work` → aggregate → server optimiser.

  Args:
    task: The task whose model is trained.
    client_work: A `ClientWorkProcess` over the task's model weights.
    server_optimizer: Applies the aggregated delta; SGD with rate 1.0 by default.
    model_aggregator: A weighted `tff.aggregators` factory; `tff.aggregators.MeanFactory()` by
      default.
  """
  server_optimizer = server_optimizer or tff.learning.optimizers.build_sgdm(learning_rate=1.0)

  @tff.tensorflow.computation
  def initial_model_weights_fn():
    return tff.learning.models.ModelWeights.from_model(task.tff_model_fn())

  weights_type = initial_model_weights_fn.type_signature.result
  distributor = tff.learning.templates.build_broadcast_process(weights_type)
  aggregator = (model_aggregator or tff.aggregators.MeanFactory()).create(
      weights_type.trainable, tff.TensorType(np.float32))
  finalizer = tff.learning.templates.build_apply_optimizer_finalizer(server_optimizer,
                                                                     weights_type)
  return tff.learning.templates.compose_learning_process(
      initial_model_weights_fn, distributor, client_work, aggregator, finalizer)
