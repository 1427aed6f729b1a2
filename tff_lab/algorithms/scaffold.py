"""SCAFFOLD: stochastic controlled averaging, with option II control variates.

Karimireddy, Kale, Mohri, Reddi, Stich, Suresh, "SCAFFOLD: Stochastic Controlled Averaging for
Federated Learning", ICML 2020 (arXiv:1910.06378), Algorithm 1. Client drift under heterogeneous
data is corrected with control variates: the server keeps c, each client i keeps c_i (0 before
its first round), and a round with sampled clients S is

    client i:  y ← x;  K times:  y ← y − η_l·(g_i(y) − c_i + c)
               c_i⁺ ← c_i − c + (x − y)/(K·η_l)                       (option II)
               sends Δy_i = y − x and Δc_i = c_i⁺ − c_i;  keeps c_i ← c_i⁺
    server:    x ← x + η_g·(1/|S|)·Σ Δy_i;   c ← c + (1/N)·Σ Δc_i      (|S|/N · mean)

with K the client's local steps (its batches over its epochs), η_l the client learning rate,
η_g the server learning rate and N the population. In TFF's convention the update sent is
x − y and the server optimiser takes it as a pseudo-gradient, so server SGD at rate η_g is the
paper's step; another server optimiser gives SCAFFOLD with that server update.

How it runs here: each client's c_i lives in the engine's client store
(`tff_lab.simulation.client_store`), and c in the store's server part; checkpoints carry both,
so resume is exact. A round is one TFF call (`tff_lab.algorithms.client_phase`: broadcast, then
each client's K corrected SGD steps in client-placed TensorFlow, returning its Δy, K and metric
sums, which TFF 0.87 hands back to Python as a list in the clients' order), then the control-variate
arithmetic above in NumPy and the server step every backend shares
(`tff_lab.simulation.server`). The local step, g + (c − c_i), is `SCAFFOLD_STEP` (a
`tff_lab.algorithms.spec.LocalStep`). A client with no batch, or whose update is not finite,
contributes nothing and keeps its c_i.

Scope: the `tff` and `fused` backends (on `fused`, every client's steps run in one TF program:
`client_phase.create_client_phase`, tested equal to the TFF client phase); client SGD (the paper's); uniform client weights (the paper's mean);
the plain mean (no clipping, DP, robust rules, compression or secure aggregation); no update
attacks. The rest is refused before tracing (`check`).
"""

import collections
from typing import Any

import numpy as np
import tensorflow_federated as tff

from tff_lab.algorithms import client_phase as client_phase_lib
from tff_lab.algorithms import fedavg
from tff_lab.algorithms import optimizers as optimizers_lib
from tff_lab.algorithms import spec as spec_lib
from tff_lab.simulation import client_store as client_store_lib
from tff_lab.simulation import server as server_lib
from tff_lab.tasks import task as task_lib


def scaffold_gradient(grads, weights, anchor, hparams, aux=None):
  """SCAFFOLD's local step: g_i(y) + (c − c_i), the correction given in `aux['correction']`."""
  del weights, anchor, hparams
  return tuple(g + corr for g, corr in zip(grads, aux['correction']))


SCAFFOLD_STEP = spec_lib.LocalStep(scaffold_gradient)


def initial_store(task: task_lib.Task) -> client_store_lib.ClientStore:
  """A store with c_i = 0 for every client and c = 0, shaped like the model's trainable weights."""
  shapes = [tuple(v.shape) for v in task.model_fn().trainable_variables]
  zeros = lambda: [np.zeros(s, np.float32) for s in shapes]
  return client_store_lib.ClientStore(
      lambda: collections.OrderedDict(control_variate=zeros()),
      initial_server_state=collections.OrderedDict(control_variate=zeros()))


class ScaffoldRounds:
  """SCAFFOLD rounds on the `tff` or `fused` backend, advancing the state of an unweighted FedAvg process.

  The `LearningAlgorithmState` is that of `build_process` (FedAvg's structure: its model and
  server optimiser state); the control variates are in `store`.
  """

  def __init__(self, task: task_lib.Task, client_learning_rate: float,
               server_optimizer: tff.learning.optimizers.Optimizer,
               store: client_store_lib.ClientStore, population: int,
               simulation: str = 'tff'):
    """Builds the round's client phase (tracing).

    Args:
      task: The task trained.
      client_learning_rate: η_l.
      server_optimizer: Applies the mean Δy (SGD at rate η_g is the paper's server step).
      store: The client store (c_i per client, c in its server part).
      population: N, the clients sampled from.
      simulation: The backend of the client phase: `tff` or `fused`
        (`client_phase.create_client_phase`).
    """
    self._lr = float(client_learning_rate)
    self._server_optimizer = server_optimizer
    self.store = store
    self._population = population
    self._client_phase = client_phase_lib.create_client_phase(
        simulation, task, self._lr, SCAFFOLD_STEP, with_correction=True)

  def next(self, state: Any, plan) -> tff.learning.templates.LearningProcessOutput:
    """One round on the plan's reporting clients (see the module docstring)."""
    c = self.store.server['control_variate']
    client_c = [self.store.get(cid)['control_variate'] for cid in plan.client_ids]
    corrections = [[a - b for a, b in zip(c, ci)] for ci in client_c]
    results = self._client_phase(state.global_model_weights, plan, corrections)
    deltas, delta_c_sum = [], [np.zeros_like(a) for a in c]
    results, totals = client_phase_lib.read_results(results)
    for cid, ci, result in zip(plan.client_ids, client_c, results):
      if not result.usable:
        continue  # no step taken, or a diverged client: it contributes nothing, keeps its c_i
      scale = np.float32(1.0 / (result.num_steps * self._lr))
      new_ci = [a - b + d * scale for a, b, d in zip(ci, c, result.delta)]  # option II
      self.store.set(cid, collections.OrderedDict(control_variate=new_ci))
      deltas.append(result.delta)
      delta_c_sum = [s + (n - a) for s, n, a in zip(delta_c_sum, new_ci, ci)]
    mean_delta = ([np.mean(np.stack(parts), axis=0) for parts in zip(*deltas)] if deltas
                  else [np.zeros_like(a) for a in c])
    self.store.server = collections.OrderedDict(control_variate=[
        a + s / np.float32(self._population) for a, s in zip(c, delta_c_sum)])
    new_state, non_finite = server_lib.apply_server_update(self._server_optimizer, state,
                                                           mean_delta)
    server_c_norm = float(np.sqrt(sum(np.sum(np.square(a))
                                      for a in self.store.server['control_variate'])))
    return server_lib.round_output(
        new_state, non_finite, server_lib.train_metrics(*totals), collections.OrderedDict(
            contributing_clients=len(deltas), clients_with_state=len(self.store),
            server_control_variate_norm=server_c_norm), name='scaffold')

  def close(self) -> None:
    self._client_phase.close()


def build_runner(context, store: client_store_lib.ClientStore) -> ScaffoldRounds:
  """The `tff` and `fused` backends' runner for SCAFFOLD (`tff_lab.simulation.backends`)."""
  config = context.config
  return ScaffoldRounds(
      context.task, config.client_learning_rate,
      optimizers_lib.create_optimizer(config.server_optimizer, config.server_learning_rate,
                                      **config.server_optimizer_hparams),
      store, len(context.task.train_data.client_ids), simulation=config.simulation)


def _build_process(task, client_optimizer, server_optimizer, model_aggregator=None,
                   with_attacks=False):
  """The process whose state SCAFFOLD advances: unweighted FedAvg's (model, server optimiser).

  Its own `next` is FedAvg's, not SCAFFOLD's: SCAFFOLD rounds need the client store and run
  through `ScaffoldRounds` (the training loop and `tff_lab.simulation.backends` do that).
  """
  del with_attacks
  return fedavg.build_fedavg(task, client_optimizer, server_optimizer, weighted=False,
                             model_aggregator=model_aggregator)


def _build_client_work(task, client_optimizer, with_attacks=False):
  raise ValueError('--algorithm=scaffold has no stand-alone client work: its clients need their '
                   'control variates (ScaffoldRounds)')


SPEC = spec_lib.AlgorithmSpec(
    name='scaffold',
    description='SCAFFOLD: local SGD corrected by control variates, option II (Karimireddy et '
    'al., ICML 2020)',
    build_process=_build_process, build_client_work=_build_client_work,
    weighted=False, local_step=SCAFFOLD_STEP, supports_secure_aggregation=False,
    requires_client_sgd="the paper's",
    aggregates_with='the plain mean', simulates_update_attacks=False,
    client_state=('control_variate',), initial_store=initial_store,
    build_runner=build_runner, fused_runner=True)
