"""FedNova: federated normalised averaging, with vanilla local SGD.

Wang, Liu, Liang, Joshi, Poor, "Tackling the Objective Inconsistency Problem in Heterogeneous
Federated Optimization", NeurIPS 2020 (arXiv:2007.07481), §4. When clients run
different numbers of local steps τ_i (their batches over their epochs; stragglers fewer), FedAvg's
average of model deltas converges to a stationary point of Σ_i (p_i τ_i / Σ_j p_j τ_j)·F_i
instead of the true objective Σ_i p_i F_i. FedNova averages per-step (normalised) updates
instead and rescales the average by an effective number of steps. A round with reporting
clients S is

    client i:  y_i ← x;  τ_i times:  y_i ← y_i − η_l·g_i(y_i)
               sends d_i = (x − y_i)/τ_i  (a_i = [1, …, 1], ‖a_i‖₁ = τ_i: η_l·d_i of the paper),
               its τ_i and its weight n_i
    server:    p_i = n_i / Σ_{j∈S} n_j;   τ_eff = Σ_i p_i τ_i
               x ← x − τ_eff · Σ_i p_i d_i                           (FedNova, §4)

In TFF's convention the update is x − y, taken by the server optimiser as a pseudo-gradient: the
server step here is `server_optimizer(τ_eff·Σ_i p_i d_i)`, so server SGD at rate 1 is the paper's
update, SGD at rate η_g scales it by η_g, and another server optimiser (momentum, Adam, ...) gets
FedNova's pseudo-gradient where FedOpt gets FedAvg's. With every τ_i = τ,
τ_eff·Σ p_i d_i = Σ p_i (x − y_i), FedAvg's weighted mean: FedNova reduces to `fedavg`
(tests/algorithms/test_fednova.py checks it to float round-off).

Weights. The paper's p_i is client i's share of the data, n_i = |D_i|. By default
(`weighting='examples_processed'`, what `--algorithm=fednova` runs) n_i is instead the number of
examples the client processed this round, as tff_lab's weighted `fedavg` counts them (TFF's
`ClientWeighting.NUM_EXAMPLES`: its epochs × its examples, fewer for a straggler), which is what
makes FedNova with equal τ_i exactly tff_lab's `fedavg`. With equal local work the two agree (n_i =
E·|D_i| ∝ |D_i|). They differ for stragglers, and the difference is not cosmetic: by the paper's
analysis (§3, Theorem 1) the update converges towards Σ_i w_i F_i with w_i the weights of the
normalised d_i, so the default converges towards Σ_i n_i·F_i with n_i the examples processed (a
straggler running E_i of E epochs counts E_i/E of its data), the paper's FedNova towards Σ_i
|D_i|·F_i, and tff_lab's weighted FedAvg (weights n_i on deltas of τ_i steps) towards Σ_i n_i
τ_i·F_i. The default removes the τ_i factor of the deltas but keeps the example-count weighting; the
paper's weights are `FedNovaRounds(..., weighting='dataset_size')` (|D_i| = the client's raw dataset
size, whatever part of it the round used; tested against NumPy too).

How it runs here: like SCAFFOLD (`tff_lab.algorithms.scaffold`), a round is one TFF call
(`tff_lab.algorithms.client_phase`: broadcast, then each client's local SGD in client-placed
TensorFlow, returning its delta x − y_i, τ_i, n_i and metric sums, in the clients' order), then the
normalised average above in NumPy and the server step every backend shares
(`tff_lab.simulation.server`). Why a runner rather than a TFF learning process: the server's
update needs every client's τ_i next to its delta (τ_eff is a second weighted mean), which TFF's
aggregator → finalizer composition does not carry (it would have to smuggle τ_i through the
model-shaped update, where clipping, DP noise, robust rules and compression would act on it too).
The `LearningAlgorithmState` is that of weighted FedAvg (model and server optimiser state), so
checkpoints, resume, `get_model_weights` and evaluation are unchanged. A client with no batch,
or whose update is not finite, contributes nothing (weight 0, as in FedAvg). FedNova keeps no
client state (`client_state=()`).

Scope: the `tff` backend (in TFF's execution context, so `--workers` too; untested there) and
`fused` (every client's steps in one TF program, with its step count:
`client_phase.create_client_phase`, tested equal to the TFF client phase); client
SGD (vanilla local SGD: for momentum or proximal steps a_i differs and the paper gives its norm);
the plain weighted mean (no clipping, DP, robust rules, compression or secure aggregation); no
update attacks (label flipping, dropouts and stragglers are supported). `vectorized` steps all
clients in lockstep and is refused; the rest is refused before tracing (`check`).
"""

import collections
from typing import Any

import numpy as np
import tensorflow_federated as tff

from tff_lab.algorithms import client_phase as client_phase_lib
from tff_lab.algorithms import fedavg
from tff_lab.algorithms import optimizers as optimizers_lib
from tff_lab.algorithms import spec as spec_lib
from tff_lab.simulation import server as server_lib
from tff_lab.tasks import task as task_lib


def normalized_update(deltas, steps, weights):
  """FedNova's server pseudo-gradient τ_eff·Σ_i p_i d_i, and τ_eff.

  Args:
    deltas: Per client, its x − y_i (one array per trainable variable).
    steps: Per client, τ_i > 0.
    weights: Per client, n_i > 0.

  Returns:
    The update (float32 arrays) and τ_eff = Σ_i p_i τ_i, with p_i = n_i / Σ_j n_j.
  """
  p = np.asarray(weights, np.float64) / np.sum(np.asarray(weights, np.float64))
  tau_eff = float(np.dot(p, np.asarray(steps, np.float64)))
  update = [tau_eff * sum(p_i * np.asarray(parts[i], np.float64) / tau_i
                          for i, (p_i, tau_i) in enumerate(zip(p, steps)))
            for parts in zip(*deltas)]
  return [u.astype(np.float32) for u in update], tau_eff


# What n_i in p_i = n_i / Σ n_j counts (see the module docstring).
WEIGHTINGS = ('examples_processed', 'dataset_size')


class FedNovaRounds:
  """FedNova rounds on the `tff` or `fused` backend, advancing the state of a weighted FedAvg process."""

  def __init__(self, task: task_lib.Task, client_learning_rate: float,
               server_optimizer: tff.learning.optimizers.Optimizer,
               weighting: str = 'examples_processed', simulation: str = 'tff'):
    """Builds the round's TFF computation (tracing).

    Args:
      task: The task trained.
      client_learning_rate: η_l of the clients' SGD.
      server_optimizer: Applies τ_eff·Σ p_i d_i (SGD at rate 1 is the paper's server step).
      weighting: n_i: `examples_processed` this round (tff_lab's FedAvg weights, the default) or
        `dataset_size` |D_i| (the paper's p_i).
      simulation: The backend of the client phase: `tff` or `fused`.
    """
    if weighting not in WEIGHTINGS:
      raise ValueError(f'weighting must be one of {WEIGHTINGS}, got {weighting!r}')
    self._weighting = weighting
    self._task = task
    self._dataset_sizes = {}
    self._server_optimizer = server_optimizer
    self._client_phase = client_phase_lib.create_client_phase(
        simulation, task, float(client_learning_rate), spec_lib.PLAIN_SGD)

  def _dataset_size(self, client_id: str) -> int:
    if client_id not in self._dataset_sizes:
      size = int(self._task.train_data.create_tf_dataset_for_client(client_id).cardinality())
      if size < 0:
        raise ValueError(f"weighting='dataset_size' needs client {client_id!r}'s dataset size, "
                         'which its dataset does not know')
      self._dataset_sizes[client_id] = size
    return self._dataset_sizes[client_id]

  def next(self, state: Any, plan) -> tff.learning.templates.LearningProcessOutput:
    """One round on the plan's reporting clients (see the module docstring)."""
    results = self._client_phase(state.global_model_weights, plan)
    deltas, steps, weights = [], [], []
    results, totals = client_phase_lib.read_results(results)
    for cid, result in zip(plan.client_ids, results):
      if not result.usable or result.num_examples == 0:
        continue  # no step taken, or a diverged client: weight 0, as in FedAvg
      deltas.append(result.delta)
      steps.append(result.num_steps)
      n = result.num_examples
      weights.append(n if self._weighting == 'examples_processed' else self._dataset_size(cid))
    if deltas:
      update, tau_eff = normalized_update(deltas, steps, weights)
    else:
      update = [np.zeros_like(w) for w in state.global_model_weights.trainable]
      tau_eff = 0.0
    new_state, non_finite = server_lib.apply_server_update(self._server_optimizer, state, update)
    return server_lib.round_output(
        new_state, non_finite, server_lib.train_metrics(*totals), collections.OrderedDict(
            contributing_clients=len(deltas), tau_eff=tau_eff,
            min_local_steps=min(steps, default=0), max_local_steps=max(steps, default=0)),
        name='fednova')

  def close(self) -> None:
    self._client_phase.close()


def build_runner(context, store=None) -> FedNovaRounds:
  """The `tff` and `fused` backends' runner for FedNova (`tff_lab.simulation.backends`); no client store."""
  del store
  config = context.config
  return FedNovaRounds(
      context.task, config.client_learning_rate,
      optimizers_lib.create_optimizer(config.server_optimizer, config.server_learning_rate,
                                      **config.server_optimizer_hparams),
      simulation=config.simulation)


def _build_process(task, client_optimizer, server_optimizer, model_aggregator=None,
                   with_attacks=False):
  """The process whose state FedNova advances: weighted FedAvg's (model, server optimiser).

  Its own `next` is FedAvg's, not FedNova's: FedNova rounds run through `FedNovaRounds` (the
  training loop and `tff_lab.simulation.backends` do that).
  """
  del with_attacks
  return fedavg.build_fedavg(task, client_optimizer, server_optimizer, weighted=True,
                             model_aggregator=model_aggregator)


def _build_client_work(task, client_optimizer, with_attacks=False):
  raise ValueError('--algorithm=fednova has no stand-alone client work: its server needs every '
                   "client's step count (FedNovaRounds)")


SPEC = spec_lib.AlgorithmSpec(
    name='fednova',
    description='FedNova: per-step normalised averaging of local SGD, rescaled by τ_eff (Wang '
    'et al., NeurIPS 2020)',
    build_process=_build_process, build_client_work=_build_client_work,
    weighted=True, local_step=None, supports_secure_aggregation=False,
    requires_client_sgd='FedNova normalises vanilla local SGD',
    aggregates_with='its normalised weighted mean', simulates_update_attacks=False,
    build_runner=build_runner, fused_runner=True)
