"""q-FFL trained by q-FedAvg: fair resource allocation, clients with a high loss weigh more.

Li, Sanjabi, Beirami, Smith, "Fair Resource Allocation in Federated Learning", ICLR 2020
(arXiv:1905.10497), Algorithm 2 (q-FedAvg), as the authors' code runs it
(github.com/litian96/fair_flearn, `flearn/trainers/qffedavg.py`, `fedbase.aggregate2`). The
objective is f_q(w) = Σ_k p_k/(q+1)·F_k^{q+1}(w): q = 0 is FedAvg's, and as q grows the clients
with the largest loss dominate (q → ∞ approaches the minimax). A round with reporting clients S is

    client k:  F_k ← F_k(wᵗ) + 1e-10        its loss at the broadcast model, BEFORE training
               w̄_k ← E local epochs of SGD at rate η from wᵗ
               Δw_k = L·(wᵗ − w̄_k),  L = 1/η
               Δ_k = F_k^q·Δw_k;   h_k = q·F_k^{q−1}·‖Δw_k‖² + L·F_k^q      (‖·‖² squared L2)
    server:    wᵗ⁺¹ = wᵗ − Σ_k Δ_k / Σ_k h_k

F_k(wᵗ). As in the authors' code (`loss = c.get_loss()` before `c.solve_inner`), F_k is the
client's mean loss over its whole training set at the broadcast model, not the running loss of
its local steps: the round runs a second client phase, `BroadcastLoss`, at learning rate 0 (so
every batch is evaluated at wᵗ) over one pass of the client's data, as the client sees it (its
labels flipped if it is a label-flipping attacker; a straggler's reduced work does not shorten
it). It is one more pass over each client's data per round, in the same round (no extra
communication: the client computes it before training). The forward pass is the training one
(`training=True`), the same as the local steps'; for models with dropout it is a stochastic
estimate. The 1e-10 is the authors' (`np.float_power(loss + 1e-10, q)`), so that F_k^{q−1}
stays finite.

L. The paper estimates the Lipschitz constant of ∇F_k by the inverse of the clients' learning
rate, L = 1/η (the authors' code: `1.0/self.learning_rate`), and that is what this module does:
L = 1/--client_learning_rate. Δw_k = (wᵗ − w̄_k)/η is then the
sum of the local gradients; for a single local step it is ∇F_k(wᵗ).

q = 0 is FedAvg. Then Δ_k = L·Δ̃_k and h_k = L (with Δ̃_k = wᵗ − w̄_k), so
wᵗ⁺¹ = wᵗ − mean_k(wᵗ − w̄_k): uniformly weighted FedAvg with server SGD at rate 1, i.e.
tff_lab's `fedavg_unweighted` (tests/algorithms/test_qffl.py checks it on the same plans).

Server step. In TFF's convention the server optimiser takes the pseudo-gradient
Σ_k Δ_k / Σ_k h_k (`tff_lab.simulation.server`), so server SGD at rate 1 (the default) is the
paper's update; SGD at rate η_g scales it by η_g, and another server optimiser (momentum, Adam,
...) gets q-FedAvg's pseudo-gradient where FedOpt gets FedAvg's (not in the paper). A server
learning-rate schedule scales it per round in the same way.

Sampling. The authors sample clients ∝ n_k and average them uniformly (`sampling=2`); here the
clients are those of tff_lab's round plan (`--client_sampling`: m of N uniformly by default),
and the update above has no other weights. A client with no batch, or whose update or F_k is not
finite, contributes nothing (the round's Σ's skip it); with no contributor the model stays.

How it runs here: like FedNova (`tff_lab.algorithms.fednova`), q-FedAvg is a runner on the round
engine: the shared client phase (`client_phase.create_client_phase`, on `--simulation=tff` or
`fused`) returns each client's delta, the loss phase each client's F_k, the arithmetic above is
NumPy (float64) and the server step is the one every backend shares. It keeps no client state
(the `LearningAlgorithmState` is unweighted FedAvg's), so checkpoints and resume are those of
FedAvg. Scope: client SGD (L = 1/η is SGD's step), the plain sums above (no clipping, DP,
robust rules, compression or secure aggregation), no update attacks (label flipping, dropouts
and stragglers are supported), no client learning-rate schedule (L would change per round), not
`vectorized`; the rest is refused before tracing (`check`, the spec's fields).
"""

import collections
import dataclasses
from typing import Any

import attrs
import numpy as np
import tensorflow_federated as tff

from tff_lab.algorithms import client_phase as client_phase_lib
from tff_lab.algorithms import fedavg
from tff_lab.algorithms import optimizers as optimizers_lib
from tff_lab.algorithms import spec as spec_lib
from tff_lab.simulation import server as server_lib
from tff_lab.tasks import task as task_lib

LOSS_EPSILON = 1e-10  # added to F_k, as in the authors' code


class BroadcastLoss:
  """Each reporting client's mean loss at the broadcast weights, over one pass of its data.

  A client phase at learning rate 0 (every step evaluates the unchanged weights) on the plan's
  clients with one epoch of their full training data (same batch size and labels as their
  training; no straggler truncation, no update attack). Returns `(loss_sum, num_examples)` per
  reporting client, in the plan's order. AFL (`tff_lab.algorithms.afl`) uses it for its domain
  losses.
  """

  def __init__(self, simulation: str, task: task_lib.Task):
    self._spec = attrs.evolve(task.train_spec, num_epochs=1, max_elements=None)
    self._phase = client_phase_lib.create_client_phase(simulation, task, 0.0,
                                                       spec_lib.PLAIN_SGD)

  def __call__(self, weights: Any, plan) -> list[tuple[float, int]]:
    clients = tuple(dataclasses.replace(c, train_spec=self._spec, attack=None)
                    for c in plan.clients)
    results = self._phase(weights, dataclasses.replace(plan, clients=clients))
    return [(float(r['loss_sum']), int(r['num_examples'])) for r in results]

  def close(self) -> None:
    self._phase.close()


def qfedavg_update(deltas, losses, q: float, lipschitz: float):
  """q-FedAvg's server pseudo-gradient Σ_k Δ_k / Σ_k h_k (see the module docstring).

  Args:
    deltas: Per client, wᵗ − w̄_k (one array per trainable variable).
    losses: Per client, F_k(wᵗ) (LOSS_EPSILON is added here).
    q: The fairness parameter, >= 0.
    lipschitz: L (1/η).

  Returns:
    The update (float32 arrays) and Σ_k h_k.
  """
  numerator, h_sum = None, 0.0
  for delta, loss in zip(deltas, losses):
    f = float(loss) + LOSS_EPSILON
    dw = [lipschitz * np.asarray(d, np.float64) for d in delta]
    fq = np.float_power(f, q)
    norm_sq = sum(float(np.sum(np.square(d))) for d in dw)
    h_sum += q * np.float_power(f, q - 1) * norm_sq + lipschitz * fq
    part = [fq * d for d in dw]
    numerator = part if numerator is None else [a + b for a, b in zip(numerator, part)]
  return [(n / h_sum).astype(np.float32) for n in numerator], h_sum


class QFedAvgRounds:
  """q-FedAvg rounds on the `tff` or `fused` backend, advancing an unweighted FedAvg state."""

  def __init__(self, task: task_lib.Task, client_learning_rate: float, q: float,
               server_optimizer: tff.learning.optimizers.Optimizer, simulation: str = 'tff'):
    """Builds the round's client phases (tracing).

    Args:
      task: The task trained.
      client_learning_rate: η of the clients' SGD; L = 1/η.
      q: The fairness parameter, >= 0 (0: FedAvg).
      server_optimizer: Applies Σ Δ_k / Σ h_k (SGD at rate 1 is the paper's server step).
      simulation: The backend of the client phases: `tff` or `fused`.
    """
    if q < 0:
      raise ValueError(f'q must be >= 0, got {q}')
    self._lr = float(client_learning_rate)
    self._q = float(q)
    self._server_optimizer = server_optimizer
    self._client_phase = client_phase_lib.create_client_phase(simulation, task, self._lr,
                                                              spec_lib.PLAIN_SGD)
    self._losses = BroadcastLoss(simulation, task)

  def next(self, state: Any, plan) -> tff.learning.templates.LearningProcessOutput:
    """One round on the plan's reporting clients (see the module docstring)."""
    losses = self._losses(state.global_model_weights, plan)
    results = self._client_phase(state.global_model_weights, plan)
    deltas, client_losses = [], []
    results, totals = client_phase_lib.read_results(results)
    for (loss_sum, n_eval), result in zip(losses, results):
      loss = loss_sum / n_eval if n_eval else float('nan')
      if not result.usable or not np.isfinite(loss):
        continue  # no step taken, or a diverged client: it contributes nothing
      deltas.append(result.delta)
      client_losses.append(loss)
    if deltas:
      update, h_sum = qfedavg_update(deltas, client_losses, self._q, 1.0 / self._lr)
    else:
      update = [np.zeros_like(w) for w in state.global_model_weights.trainable]
      h_sum = 0.0
    new_state, non_finite = server_lib.apply_server_update(self._server_optimizer, state, update)
    return server_lib.round_output(
        new_state, non_finite, server_lib.train_metrics(*totals), collections.OrderedDict(
            contributing_clients=len(deltas),
            broadcast_loss_mean=float(np.mean(client_losses)) if deltas else float('nan'),
            broadcast_loss_max=max(client_losses, default=float('nan')),
            h_sum=float(h_sum)), name='qfedavg')

  def close(self) -> None:
    self._client_phase.close()
    self._losses.close()


def build_runner(context, store=None) -> QFedAvgRounds:
  """The `tff` and `fused` backends' runner for q-FedAvg (`tff_lab.simulation.backends`)."""
  del store
  config = context.config
  hparams = SPEC.resolve_hparams(config.algorithm_hparams)
  return QFedAvgRounds(
      context.task, config.client_learning_rate, hparams['q'],
      optimizers_lib.create_optimizer(config.server_optimizer, config.server_learning_rate,
                                      **config.server_optimizer_hparams),
      simulation=config.simulation)


def _build_process(task, client_optimizer, server_optimizer, model_aggregator=None,
                   with_attacks=False, q=0.0):
  """The process whose state q-FedAvg advances: unweighted FedAvg's (model, server optimiser).

  Its own `next` is FedAvg's, not q-FedAvg's: q-FedAvg rounds run through `QFedAvgRounds` (the
  training loop and `tff_lab.simulation.backends` do that).
  """
  del with_attacks, q
  return fedavg.build_fedavg(task, client_optimizer, server_optimizer, weighted=False,
                             model_aggregator=model_aggregator)


def _build_client_work(task, client_optimizer, with_attacks=False, q=0.0):
  raise ValueError("--algorithm=qfedavg has no stand-alone client work: its server needs every "
                   "client's loss at the broadcast model (QFedAvgRounds)")


SPEC = spec_lib.AlgorithmSpec(
    name='qfedavg',
    description='q-FedAvg: q-FFL fair resource allocation, clients reweighted by F_k^q (Li et '
    'al., ICLR 2020)',
    build_process=_build_process, build_client_work=_build_client_work,
    weighted=False,
    hparams=collections.OrderedDict(q=spec_lib.Hyperparameter(
        0.0, 'q-FFL fairness parameter q >= 0 (--algorithm=qfedavg; 0 is FedAvg)', minimum=0.0)),
    local_step=None, supports_secure_aggregation=False,
    requires_client_sgd='it estimates L = 1/η of client SGD',
    aggregates_with='its own Σ Δ_k / Σ h_k', simulates_update_attacks=False,
    build_runner=build_runner, fused_runner=True)
