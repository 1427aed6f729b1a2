"""FedProx.

Li, Sahu, Zaheer, Sanjabi, Talwalkar, Smith, "Federated Optimization in Heterogeneous Networks",
MLSys 2020 (arXiv:1812.06127). Each client approximately minimises
h_k(w) = F_k(w) + (μ/2)·‖w − wᵗ‖², i.e. runs SGD on its loss plus a proximal term pulling it
towards the round's global weights wᵗ; the server averages weighted by example count. μ = 0 is
FedAvg. The process is TFF's `build_weighted_fed_prox`.
"""

from typing import Optional

import tensorflow_federated as tff

from tff_lab.tasks import task as task_lib


def build_fedprox(task: task_lib.Task,
                  mu: float,
                  client_optimizer: tff.learning.optimizers.Optimizer,
                  server_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
                  model_aggregator=None,
                  loop_implementation=tff.learning.LoopImplementation.DATASET_REDUCE,
                  ) -> tff.learning.templates.LearningProcess:
  """Returns a FedProx process with proximal strength `mu` (≥ 0)."""
  if mu < 0:
    raise ValueError(f'FedProx mu must be >= 0, got {mu}')
  server_optimizer = server_optimizer or tff.learning.optimizers.build_sgdm(learning_rate=1.0)
  return tff.learning.algorithms.build_weighted_fed_prox(
      task.tff_model_fn, proximal_strength=mu, client_optimizer_fn=client_optimizer,
      server_optimizer_fn=server_optimizer, model_aggregator=model_aggregator,
      loop_implementation=loop_implementation)
