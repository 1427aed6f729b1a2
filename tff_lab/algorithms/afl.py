"""Agnostic federated learning (AFL): the model against the worst mixture of client domains.

Mohri, Sivek, Suresh, "Agnostic Federated Learning", ICML 2019 (arXiv:1902.00146). Instead of the
uniform (or size-weighted) mixture of the clients' distributions, AFL minimises the loss under
the worst mixture λ in the simplex Δ_D of the D domains:

    min_w max_{λ ∈ Δ_D} Σ_d λ_d·L_d(w)           (L_d: domain d's mean loss)

solved by alternating a descent step on w with an ascent step on λ. This module follows FedJAX's
`AgnosticFedAvg` (`fedjax/algorithms/agnostic_fed_avg.py`, the version citing this paper, where
each client belongs to one domain). A round with reporting clients S, domain d(k) of client k
and step η_λ (`--afl_lambda_lr`), is

    clients:  L_k, N_k ← the loss sum and example count of client k's training data at wᵗ
              (one pass, BEFORE training);  Δ_k ← wᵗ − w̄_k after its local SGD, over n_k
              examples (its epochs × its data)
    domains:  L_d = Σ_{k: d(k)=d} L_k,  N_d = Σ_{k: d(k)=d} N_k      (over S)
    model:    p_k = λ_{d(k)}·n_k / N_{d(k)};   wᵗ⁺¹ = server_optimizer(Σ_k p_k Δ_k / Σ_k p_k)
    λ:        λ_d ← λ_d·exp(η_λ·L_d/N_d)   (L_d/N_d taken as 0 for a domain with no client in S)
              λ ← λ / Σ_d λ_d

The model step uses the round's λ before its update, as FedJAX does. The λ step is exponentiated
gradient ascent (mirror ascent with the entropy): the gradient of Σ_d λ_d L_d in λ is the vector
of domain losses, and the normalisation is the projection onto the simplex in the KL divergence
(the Bregman projection of EG; FedJAX's `jnp.maximum(·, 0)` before it is a no-op for positive
weights). It is computed in float64 with the largest exponent subtracted first (the same λ in
exact arithmetic, no overflow). λ starts uniform, 1/D. In TFF's convention the server
optimiser takes the mean Δ as a pseudo-gradient: server SGD at rate 1 is "w ← λ-weighted mean of
the clients' models"; FedJAX's `server_optimizer` plays the same role (any optimiser works).

Domains. No tff_lab task gives domains, so each training client is its own domain (D = N, d(k)
the client's index in `task.train_data.client_ids`); `AflRounds(..., domains=...)` takes a client
→ domain map for a task that has them. With one client per domain and one epoch,
p_k = λ_k: the model is the λ-weighted mean of the sampled clients' deltas. λ over unsampled
domains is multiplied by exp(0) = 1, so a round boosts its sampled domains relative to the rest
by their losses (FedJAX's behaviour with partial participation).

F at wᵗ. The domain losses are the clients' losses at the broadcast model on their whole
training data, FedJAX's `evaluate_multiple_clients` before `train_multiple_clients`:
`tff_lab.algorithms.qffl.BroadcastLoss` (a client phase at learning rate 0 over one pass, the
training forward pass; a label-flipping client's flipped labels).

State. λ (float64, one weight per domain) lives in the server part of the engine's client store
(`tff_lab.simulation.client_store`): checkpoints carry it, so resume is exact. The store holds
no per-client entries. A client with no batch, or whose update or loss is not finite,
contributes neither its delta nor its domain loss. The `LearningAlgorithmState` is that of
unweighted FedAvg (model and server optimiser state).

Scope: the `tff` and `fused` backends (the shared client phase,
`client_phase.create_client_phase`); client SGD (FedJAX's default trainer); its own weighted
mean (no clipping, DP, robust rules, compression or secure aggregation); no update attacks
(label flipping, dropouts and stragglers are supported); not `vectorized`. The rest is refused
before tracing (`check`).
"""

import collections
from typing import Any, Optional

import numpy as np
import tensorflow_federated as tff

from tff_lab.algorithms import client_phase as client_phase_lib
from tff_lab.algorithms import fedavg
from tff_lab.algorithms import optimizers as optimizers_lib
from tff_lab.algorithms import qffl
from tff_lab.algorithms import spec as spec_lib
from tff_lab.simulation import client_store as client_store_lib
from tff_lab.simulation import server as server_lib
from tff_lab.tasks import task as task_lib


def update_domain_weights(weights: np.ndarray, mean_losses: np.ndarray, lr: float
                          ) -> np.ndarray:
  """One exponentiated-gradient ascent step on λ, projected onto the simplex (normalised).

  Args:
    weights: λ, positive, summing to 1.
    mean_losses: Per domain, its mean loss this round (0 for a domain not observed).
    lr: η_λ > 0.

  Returns:
    λ ⊙ exp(η_λ·losses) / Σ (float64).
  """
  exponent = lr * np.asarray(mean_losses, np.float64)
  new = np.asarray(weights, np.float64) * np.exp(exponent - np.max(exponent))
  new = np.maximum(new, 0.0)
  return new / np.sum(new)


def initial_store(task: task_lib.Task) -> client_store_lib.ClientStore:
  """λ uniform over the domains (one per training client), in the store's server part."""
  num_domains = len(task.train_data.client_ids)
  return client_store_lib.ClientStore(
      collections.OrderedDict, initial_server_state=collections.OrderedDict(
          domain_weights=[np.full(num_domains, 1.0 / num_domains, np.float64)]))


class AflRounds:
  """AFL rounds on the `tff` or `fused` backend, advancing an unweighted FedAvg state."""

  def __init__(self, task: task_lib.Task, client_learning_rate: float, lambda_lr: float,
               server_optimizer: tff.learning.optimizers.Optimizer,
               store: client_store_lib.ClientStore, simulation: str = 'tff',
               domains: Optional[dict] = None):
    """Builds the round's client phases (tracing).

    Args:
      task: The task trained.
      client_learning_rate: η of the clients' SGD.
      lambda_lr: η_λ > 0, the step of λ's exponentiated-gradient ascent.
      server_optimizer: Applies the λ-weighted mean delta.
      store: The client store; λ is `store.server['domain_weights'][0]`.
      simulation: The backend of the client phases: `tff` or `fused`.
      domains: Client id → domain index in [0, len(λ)); default: each training client its own
        domain, by its position in `task.train_data.client_ids`.
    """
    if not lambda_lr > 0:
      raise ValueError(f'afl_lambda_lr must be > 0, got {lambda_lr}')
    self._lambda_lr = float(lambda_lr)
    self._server_optimizer = server_optimizer
    self.store = store
    self._domains = (domains if domains is not None else
                     {cid: i for i, cid in enumerate(task.train_data.client_ids)})
    self._client_phase = client_phase_lib.create_client_phase(
        simulation, task, float(client_learning_rate), spec_lib.PLAIN_SGD)
    self._losses = qffl.BroadcastLoss(simulation, task)

  def next(self, state: Any, plan) -> tff.learning.templates.LearningProcessOutput:
    """One round on the plan's reporting clients (see the module docstring)."""
    lam = self.store.server['domain_weights'][0]
    losses = self._losses(state.global_model_weights, plan)
    results = self._client_phase(state.global_model_weights, plan)
    domain_loss, domain_num = np.zeros_like(lam), np.zeros_like(lam)
    kept = []
    results, totals = client_phase_lib.read_results(results)
    for cid, (loss_sum, n_eval), result in zip(plan.client_ids, losses, results):
      if not result.usable or n_eval == 0 or not np.isfinite(loss_sum):
        continue  # no step taken, or a diverged client: it contributes nothing
      d = self._domains[cid]
      domain_loss[d] += loss_sum
      domain_num[d] += n_eval
      kept.append((d, result.num_examples, result.delta))
    weights = [lam[d] / domain_num[d] * n for d, n, _ in kept]
    total = float(np.sum(weights))
    if kept and total > 0:
      mean_delta = [(sum(w * np.asarray(parts[i], np.float64) for i, w in enumerate(weights))
                     / total).astype(np.float32)
                    for parts in zip(*[delta for _, _, delta in kept])]
    else:
      mean_delta = [np.zeros_like(w) for w in state.global_model_weights.trainable]
    observed = domain_num > 0
    mean_loss = np.where(observed, domain_loss / np.where(observed, domain_num, 1.0), 0.0)
    new_lam = update_domain_weights(lam, mean_loss, self._lambda_lr)
    self.store.server = collections.OrderedDict(domain_weights=[new_lam])
    new_state, non_finite = server_lib.apply_server_update(self._server_optimizer, state,
                                                           mean_delta)
    entropy = float(-np.sum(new_lam * np.log(np.where(new_lam > 0, new_lam, 1.0))))
    return server_lib.round_output(
        new_state, non_finite, server_lib.train_metrics(*totals), collections.OrderedDict(
            contributing_clients=len(kept),
            worst_domain_loss=float(np.max(mean_loss[observed])) if kept else float('nan'),
            lambda_max=float(np.max(new_lam)), lambda_min=float(np.min(new_lam)),
            lambda_entropy=entropy), name='afl')

  def close(self) -> None:
    self._client_phase.close()
    self._losses.close()


def check(config) -> None:
  """Refuses, in one line, what this AFL does not implement (see the module docstring)."""
  lambda_lr = SPEC.resolve_hparams(config.algorithm_hparams)['afl_lambda_lr']
  if not lambda_lr > 0:
    raise ValueError(f'afl_lambda_lr must be > 0, got {lambda_lr}')


def build_runner(context, store: client_store_lib.ClientStore) -> AflRounds:
  """The `tff` and `fused` backends' runner for AFL (`tff_lab.simulation.backends`)."""
  config = context.config
  hparams = SPEC.resolve_hparams(config.algorithm_hparams)
  return AflRounds(
      context.task, config.client_learning_rate, hparams['afl_lambda_lr'],
      optimizers_lib.create_optimizer(config.server_optimizer, config.server_learning_rate,
                                      **config.server_optimizer_hparams),
      store, simulation=config.simulation)


def _build_process(task, client_optimizer, server_optimizer, model_aggregator=None,
                   with_attacks=False, afl_lambda_lr=0.1):
  """The process whose state AFL advances: unweighted FedAvg's (model, server optimiser).

  Its own `next` is FedAvg's, not AFL's: AFL rounds need λ from the client store and run through
  `AflRounds` (the training loop and `tff_lab.simulation.backends` do that).
  """
  del with_attacks, afl_lambda_lr
  return fedavg.build_fedavg(task, client_optimizer, server_optimizer, weighted=False,
                             model_aggregator=model_aggregator)


def _build_client_work(task, client_optimizer, with_attacks=False, afl_lambda_lr=0.1):
  raise ValueError('--algorithm=afl has no stand-alone client work: its server weights the '
                   "clients by their domains' λ and losses (AflRounds)")


SPEC = spec_lib.AlgorithmSpec(
    name='afl',
    description='AFL: agnostic federated learning, λ over client domains by exponentiated '
    'gradient ascent (Mohri et al., ICML 2019, as FedJAX)',
    build_process=_build_process, build_client_work=_build_client_work,
    weighted=False,
    hparams=collections.OrderedDict(afl_lambda_lr=spec_lib.Hyperparameter(
        0.1, "AFL's step for the domain weights λ, > 0 (exponentiated gradient ascent)")),
    local_step=None, supports_secure_aggregation=False,
    requires_client_sgd="FedJAX's",
    aggregates_with='its own λ-weighted mean', simulates_update_attacks=False,
    client_state=('domain_weights',), check=check, initial_store=initial_store,
    build_runner=build_runner, fused_runner=True)
