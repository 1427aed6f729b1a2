"""FedDyn: federated learning with dynamic regularisation.

Acar, Zhao, Matas, Mattina, Whatmough, Saligrama, "Federated Learning Based on Dynamic
Regularization", ICLR 2021 (arXiv:2111.04263), Algorithm 1. Each client's local objective is
corrected so that, at a fixed point, the clients' stationary points agree with the global one:
client k keeps ∇L_k(θ_k^{t−1}), the gradient of its loss at its last local model (0 before its
first round), the server keeps h (0 at start), and a round with participating clients P_t is

    client k:  θ_k^t ≈ argmin_θ  L_k(θ) − ⟨∇L_k(θ_k^{t−1}), θ⟩ + (α/2)‖θ − θ^{t−1}‖²
               (K local SGD steps along g − ∇L_k(θ_k^{t−1}) + α(θ − θ^{t−1}): `FEDDYN_STEP`)
               ∇L_k(θ_k^t) = ∇L_k(θ_k^{t−1}) − α(θ_k^t − θ^{t−1})
    server:    h^t = h^{t−1} − α·(1/m)·Σ_{k∈P_t} (θ_k^t − θ^{t−1})
               θ^t = (1/|P_t|)·Σ_{k∈P_t} θ_k^t − (1/α)·h^t

with m the population (every client, not only the sampled ones) and α > 0 (`--alpha`).

How it runs here: like SCAFFOLD (`tff_lab.algorithms.scaffold`). Each client's ∇L_k(θ_k^{t−1})
(`local_gradient`) lives in the engine's client store (`tff_lab.simulation.client_store`) and h in
the store's server part, so checkpoints carry both and a resumed run continues bit for bit. A
round is one TFF call (`tff_lab.algorithms.client_phase`: broadcast θ^{t−1}, then each client's K
steps of `FEDDYN_STEP` in client-placed TensorFlow, its linear term passed as the client's
`correction`), then the arithmetic above in NumPy.

How θ^t is represented in TFF's state. The `LearningAlgorithmState` is that of unweighted FedAvg
with server SGD at learning rate 1 (its model and the SGD optimiser's state, which holds nothing
but the rate), and its model weights are θ^t, the model broadcast next round and the one
evaluated and saved. The server step is the one every backend shares
(`tff_lab.simulation.server.apply_server_update`) with the pseudo-gradient

    θ^{t−1} − θ^t = (1/|P_t|)·Σ_k (θ^{t−1} − θ_k^t) + (1/α)·h^t,

i.e. FedAvg's mean delta plus h^t/α, so SGD at rate 1 lands on θ^t (to float32 round-off) and a
non-finite update is rejected as in every other algorithm. Another server optimiser or rate would
be an algorithm the paper does not define (h already plays the server's momentum-like role), so
`check` refuses it rather than silently using it.

A client with no batch, or whose update is not finite, does not count in P_t and keeps its
state; a round with no such client leaves θ and h unchanged.

Scope: the `tff` and `fused` backends (on `fused`, every client's steps run in one TF program:
`client_phase.create_client_phase`, tested equal to the TFF client phase); client SGD (the paper's local solver); the plain unweighted mean (the
paper's 1/|P_t|; no clipping, DP, robust rules, compression or secure aggregation); no update
attacks (label flipping, dropouts and stragglers are supported); server SGD at rate 1. The rest
is refused before tracing (`check`).
"""

import collections
from typing import Any

import numpy as np
import tensorflow_federated as tff

from tff_lab.algorithms import client_phase as client_phase_lib
from tff_lab.algorithms import fedavg
from tff_lab.algorithms import spec as spec_lib
from tff_lab.simulation import client_store as client_store_lib
from tff_lab.simulation import server as server_lib
from tff_lab.tasks import task as task_lib


def feddyn_gradient(grads, weights, anchor, hparams, aux=None):
  """FedDyn's local step: g − ∇L_k(θ_k^{t−1}) + α(w − θ^{t−1}), the linear term in `aux`.

  The gradient of L_k(w) − ⟨∇L_k(θ_k^{t−1}), w⟩ + (α/2)‖w − θ^{t−1}‖² at w, with
  `aux['correction']` = ∇L_k(θ_k^{t−1}) and `anchor` = θ^{t−1}.
  """
  alpha = float(hparams['alpha'])
  return tuple(g - p + alpha * (w - w0)
               for g, p, w, w0 in zip(grads, aux['correction'], weights, anchor))


FEDDYN_STEP = spec_lib.LocalStep(feddyn_gradient)


def initial_store(task: task_lib.Task) -> client_store_lib.ClientStore:
  """∇L_k(θ_k^0) = 0 for every client and h^0 = 0, shaped like the model's trainable weights."""
  shapes = [tuple(v.shape) for v in task.model_fn().trainable_variables]
  zeros = lambda: [np.zeros(s, np.float32) for s in shapes]
  return client_store_lib.ClientStore(
      lambda: collections.OrderedDict(local_gradient=zeros()),
      initial_server_state=collections.OrderedDict(h=zeros()))


class FedDynRounds:
  """FedDyn rounds on the `tff` or `fused` backend, advancing the state of an unweighted FedAvg process.

  The `LearningAlgorithmState`'s model weights are θ^t (see the module docstring); the clients'
  ∇L_k(θ_k^{t−1}) and the server's h are in `store`.
  """

  def __init__(self, task: task_lib.Task, client_learning_rate: float, alpha: float,
               store: client_store_lib.ClientStore, population: int,
               simulation: str = 'tff'):
    """Builds the round's TFF computation (tracing).

    Args:
      task: The task trained.
      client_learning_rate: The clients' SGD learning rate.
      alpha: α > 0.
      store: The client store (`local_gradient` per client, `h` in its server part).
      population: m, the clients sampled from.
      simulation: The backend of the client phase: `tff` or `fused`.
    """
    if not alpha > 0:
      raise ValueError(f'FedDyn alpha must be > 0, got {alpha}')
    self._alpha = float(alpha)
    self.store = store
    self._population = population
    # Server SGD at rate 1 applies θ^{t−1} − θ^t exactly (the module docstring).
    self._server_optimizer = tff.learning.optimizers.build_sgdm(learning_rate=1.0)
    self._client_phase = client_phase_lib.create_client_phase(
        simulation, task, float(client_learning_rate), FEDDYN_STEP, with_correction=True,
        hparams={'alpha': self._alpha})

  def next(self, state: Any, plan) -> tff.learning.templates.LearningProcessOutput:
    """One round on the plan's reporting clients (see the module docstring)."""
    alpha = self._alpha
    h = self.store.server['h']
    previous = [self.store.get(cid)['local_gradient'] for cid in plan.client_ids]
    results = self._client_phase(state.global_model_weights, plan, previous)
    delta_sum = [np.zeros(a.shape, np.float64) for a in h]
    contributing = 0
    results, totals = client_phase_lib.read_results(results)
    for cid, grad, result in zip(plan.client_ids, previous, results):
      if not result.usable:
        continue  # no step taken, or a diverged client: not in P_t, keeps its state
      delta = result.delta  # θ^{t−1} − θ_k^t
      # ∇L_k(θ_k^t) = ∇L_k(θ_k^{t−1}) − α(θ_k^t − θ^{t−1})
      self.store.set(cid, collections.OrderedDict(local_gradient=[
          (p + alpha * d.astype(np.float64)).astype(np.float32) for p, d in zip(grad, delta)]))
      delta_sum = [s + d for s, d in zip(delta_sum, delta)]
      contributing += 1
    if contributing:
      # h^t = h^{t−1} − α(1/m)Σ(θ_k^t − θ^{t−1});  θ^{t−1} − θ^t = mean(θ^{t−1} − θ_k^t) + h^t/α
      new_h = [(a + alpha / self._population * s).astype(np.float32) for a, s in zip(h, delta_sum)]
      update = [(s / contributing + a.astype(np.float64) / alpha).astype(np.float32)
                for s, a in zip(delta_sum, new_h)]
      self.store.server = collections.OrderedDict(h=new_h)
    else:
      update = [np.zeros_like(a) for a in h]
    new_state, non_finite = server_lib.apply_server_update(self._server_optimizer, state, update)
    h_norm = float(np.sqrt(sum(np.sum(np.square(a)) for a in self.store.server['h'])))
    return server_lib.round_output(
        new_state, non_finite, server_lib.train_metrics(*totals), collections.OrderedDict(
            contributing_clients=contributing, clients_with_state=len(self.store),
            h_norm=h_norm), name='feddyn')

  def close(self) -> None:
    self._client_phase.close()


def _hparams(config) -> 'collections.OrderedDict[str, Any]':
  from tff_lab.algorithms import registry  # pylint: disable=g-import-not-at-top  (imports us)
  return registry.hparams_of(config)


def check(config) -> None:
  """Refuses, in one line, what this FedDyn does not implement (see the module docstring)."""
  alpha = _hparams(config)['alpha']
  if not alpha > 0:
    raise ValueError(f'--alpha must be > 0 for --algorithm=feddyn (the server divides by it), '
                     f'got {alpha}')
  if getattr(config, 'server_lr_schedule', None):
    raise ValueError('--algorithm=feddyn sets the server model to mean(θ_k) − h/α itself '
                     '(server SGD at rate 1): it takes no --server_lr_schedule')
  if config.server_optimizer != 'sgd' or config.server_learning_rate != 1.0:
    raise ValueError(f'--algorithm=feddyn sets the server model to mean(θ_k) − h/α itself '
                     f'(server SGD at rate 1), not --server_optimizer={config.server_optimizer} '
                     f'--server_learning_rate={config.server_learning_rate:g}')


def build_runner(context, store: client_store_lib.ClientStore) -> FedDynRounds:
  """The `tff` and `fused` backends' runner for FedDyn (`tff_lab.simulation.backends`)."""
  config = context.config
  return FedDynRounds(context.task, config.client_learning_rate, _hparams(config)['alpha'], store,
                      len(context.task.train_data.client_ids), simulation=config.simulation)


def _build_process(task, client_optimizer, server_optimizer, model_aggregator=None,
                   with_attacks=False, alpha=0.01):
  """The process whose state FedDyn advances: unweighted FedAvg's (model, server SGD at rate 1).

  Its own `next` is FedAvg's, not FedDyn's: FedDyn rounds need the client store and run through
  `FedDynRounds` (the training loop and `tff_lab.simulation.backends` do that).
  """
  del with_attacks, alpha, server_optimizer  # `check` requires server SGD at rate 1
  return fedavg.build_fedavg(task, client_optimizer,
                             tff.learning.optimizers.build_sgdm(learning_rate=1.0),
                             weighted=False, model_aggregator=model_aggregator)


def _build_client_work(task, client_optimizer, with_attacks=False, alpha=0.01):
  raise ValueError('--algorithm=feddyn has no stand-alone client work: its clients need their '
                   'linear terms from the client store (FedDynRounds)')


SPEC = spec_lib.AlgorithmSpec(
    name='feddyn',
    description='FedDyn: local SGD on a dynamically regularised objective (Acar et al., ICLR '
    '2021)',
    build_process=_build_process, build_client_work=_build_client_work,
    weighted=False,
    hparams=collections.OrderedDict(alpha=spec_lib.Hyperparameter(
        0.01, 'FedDyn regulariser weight α (> 0).', minimum=0.0)),
    local_step=FEDDYN_STEP, supports_secure_aggregation=False,
    requires_client_sgd='on its dynamically regularised objective',
    aggregates_with='the plain mean', simulates_update_attacks=False,
    client_state=('local_gradient',), check=check, initial_store=initial_store,
    build_runner=build_runner, fused_runner=True)
