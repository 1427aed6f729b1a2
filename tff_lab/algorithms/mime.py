"""Mime-Lite: a centralised optimiser's state, computed by the server and frozen on the clients.

Karimireddy, Jaggi, Kale, Mohri, Reddi, Stich, Suresh, "Breaking the centralized barrier for
cross-device federated learning" (NeurIPS 2021; "Mime: Mimicking Centralized Stochastic
Algorithms in Federated Learning", arXiv:2008.03606), Algorithm 1 (MimeLite). Client drift is
reduced by having every client follow the same base optimiser (momentum, Adam, ...) with the
same state s, which only the server updates, from full-batch gradients at the global model. A
round with reporting clients S and base optimiser U (update) / V (state update) is

    client i:  g_i = ∇f_i(x), its full-batch gradient at the broadcast x
               y_i ← x;  K times:  y_i ← U(y_i, g_i(y_i; batch), s)     (s frozen)
               sends x − y_i, g_i and its weight n_i
    server:    s ← V(s, Σ_i n_i g_i / Σ_i n_i)
               x ← server_optimizer(x, Σ_i n_i (x − y_i) / Σ_i n_i)

with the paper's server step x ← mean y_i being server SGD at rate 1 (TFF's convention: the mean
delta is a pseudo-gradient). n_i is the client's example count (TFF's
`ClientWeighting.NUM_EXAMPLES`, as tff_lab's weighted `fedavg`: its epochs × its examples).

This is TFF 0.87's `tff.learning.algorithms.build_weighted_mime_lite`, which implements exactly
that (read in `tensorflow_federated/python/learning/algorithms/mime.py`): its client work
broadcasts the optimiser state, computes each client's full-batch gradient over its dataset at
x, then trains with `optimizer.next(frozen_state, ...)` discarding the returned state; the
full-batch gradients are aggregated with the weighted mean and the server applies
`optimizer.next` to them on dummy weights to get the next state. The base optimiser is
`--client_optimizer` (with `--client_learning_rate` and its hyperparameters: `sgdm` is the
paper's Mime-Lite with momentum, `adam` with Adam; plain `sgd` has no state, so Mime-Lite is then
FedAvg with an extra gradient pass), the server optimiser `--server_optimizer`. Its state lives
in TFF's `LearningAlgorithmState` (`client_work`), so checkpoints and resume need nothing extra;
it is a plain TFF learning process and runs on the `tff` backend's `process.next`.

What the measurements do not show: each client also uploads its full-batch gradient (the size of
the model delta) and downloads the optimiser state; `upload_bytes_per_client` and
`download_bytes_per_client` count only the model delta and the model.

Scope: the `tff` backend; the plain weighted mean for both aggregations. Aggregation settings are
refused because TFF aggregates the full-batch gradients with a separate plain mean: clipping,
robust rules or compression would act on the deltas only, and DP noise would leave every client's
gradient in the clear while ε was reported; secure aggregation and the in-graph backends do not
run it; nor do update attacks (TFF's client work takes no attack input; label flipping, dropouts
and stragglers are supported).
"""

from typing import Optional

import tensorflow_federated as tff

from tff_lab.aggregators import dp as dp_lib
from tff_lab.algorithms import spec as spec_lib
from tff_lab.tasks import task as task_lib


def build_mime_lite(task: task_lib.Task,
                    base_optimizer: tff.learning.optimizers.Optimizer,
                    server_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
                    model_aggregator=None,
                    loop_implementation=tff.learning.LoopImplementation.DATASET_REDUCE,
                    ) -> tff.learning.templates.LearningProcess:
  """Returns TFF's weighted Mime-Lite process for `task`.

  Args:
    task: The task whose `tff_model_fn` is trained.
    base_optimizer: The optimiser whose state the server keeps and the clients apply frozen.
    server_optimizer: Applies the weighted mean delta; SGD at rate 1.0 (the paper's) by default.
    model_aggregator: A weighted `tff.aggregators` factory for the model deltas (weighted mean by
      default); the full-batch gradients always use the weighted mean.
    loop_implementation: How clients iterate their dataset.

  Raises:
    ValueError: For a `model_aggregator` that declares a DP mechanism: the full-batch gradients
      would bypass its noise.
  """
  if dp_lib.mechanism_of(model_aggregator) is not None:
    raise ValueError('--algorithm=mime_lite cannot run a DP model_aggregator: its clients also '
                     'send full-batch gradients, which TFF aggregates without the noise')
  return tff.learning.algorithms.build_weighted_mime_lite(
      task.tff_model_fn, base_optimizer=base_optimizer,
      server_optimizer=server_optimizer or tff.learning.optimizers.build_sgdm(learning_rate=1.0),
      client_weighting=tff.learning.ClientWeighting.NUM_EXAMPLES,
      model_aggregator=model_aggregator, loop_implementation=loop_implementation)


def _build_process(task, client_optimizer, server_optimizer, model_aggregator=None,
                   with_attacks=False):
  if with_attacks:
    raise ValueError('--algorithm=mime_lite does not simulate update attacks')
  return build_mime_lite(task, client_optimizer, server_optimizer,
                         model_aggregator=model_aggregator)


def _build_client_work(task, client_optimizer, with_attacks=False):
  raise ValueError('--algorithm=mime_lite has no stand-alone client work here: its clients need '
                   'the server\'s optimiser state (build_mime_lite)')


SPEC = spec_lib.AlgorithmSpec(
    name='mime_lite',
    description='Mime-Lite: clients apply the base optimiser (--client_optimizer) with the '
    "server's frozen state (Karimireddy et al., NeurIPS 2021)",
    build_process=_build_process, build_client_work=_build_client_work,
    weighted=True, local_step=None, supports_secure_aggregation=False,
    aggregates_with='the plain weighted mean', simulates_update_attacks=False)
