"""Example plugin: an algorithm with client state (docs/extending.md, example 2).

Local SGD whose gradient is corrected by each client's drift, SCAFFOLD-style (Karimireddy et al.,
ICML 2020, arXiv:1910.06378) but without a server control variate of its own: each client k
keeps c_k, its average gradient the last time it trained (x − y_k)/(K_k·η); the server's
estimate c is the mean of the stored c_k; a client's local step follows

    g_k(y) + β·(c − c_k)

β = `--drift_beta` ∈ [0, 1]: 0 is unweighted FedAvg exactly; 1 is the full correction. Its
pieces are tff_lab's public blocks: an `AlgorithmSpec` with a `LocalStep` and a hyperparameter
(its flag `--drift_beta` is generated), a `ClientStore` (checkpointed with the run, so resume
is exact), `create_client_phase` (per-client results on `--simulation=tff` or `fused`), and
the shared server step.

    tff-lab-run --plugin=drift_correction --algorithm=drift_correction --drift_beta=0.5
"""

import collections

import numpy as np

import tff_lab.algorithms
from tff_lab.algorithms import registry
from tff_lab.simulation import client_store as client_store_lib
from tff_lab.simulation import server as server_lib


def corrected_gradient(grads, weights, anchor, hparams, aux=None):
  """The local step: the loss gradient plus the correction β·(c − c_k) given in `aux`."""
  del weights, anchor, hparams
  return tuple(g + corr for g, corr in zip(grads, aux['correction']))


STEP = tff_lab.algorithms.LocalStep(corrected_gradient)


def initial_store(task):
  """c_k = 0 for every client; the server part keeps Σ c_k and the number of clients stored
  (a store holds lists of arrays)."""
  shapes = [tuple(v.shape) for v in task.model_fn().trainable_variables]
  zeros = lambda: [np.zeros(s, np.float32) for s in shapes]
  return client_store_lib.ClientStore(
      lambda: collections.OrderedDict(drift=zeros()),
      initial_server_state=collections.OrderedDict(drift_sum=zeros(),
                                                   count=[np.zeros([1], np.float32)]))


class DriftCorrectionRounds:
  """The algorithm's rounds on the state of an unweighted FedAvg process."""

  def __init__(self, context, store):
    config = context.config
    self._beta = float(registry.hparams_of(config)['drift_beta'])
    self._lr = float(config.client_learning_rate)
    self.store = store
    self._phase = tff_lab.algorithms.create_client_phase(
        config.simulation, context.task, self._lr, STEP, with_correction=True)
    self._server_optimizer = tff_lab.algorithms.create_optimizer(
        config.server_optimizer, config.server_learning_rate, **config.server_optimizer_hparams)

  def next(self, state, plan):
    server = self.store.server
    count = float(server['count'][0][0])
    c = [s / np.float32(count) if count else np.zeros_like(s) for s in server['drift_sum']]
    mine = [self.store.get(cid)['drift'] for cid in plan.client_ids]
    corrections = [[np.float32(self._beta) * (a - b) for a, b in zip(c, ck)] for ck in mine]
    results = self._phase(state.global_model_weights, plan, corrections)
    deltas = []
    results, totals = tff_lab.algorithms.read_results(results)  # NumPy, and the round's totals
    for cid, ck, result in zip(plan.client_ids, mine, results):
      if not result.usable:
        continue  # no step, or diverged: contributes nothing, keeps its c_k
      delta = result.delta
      new = [d / np.float32(result.num_steps * self._lr) for d in delta]
      was_stored = cid in self.store
      self.store.set(cid, collections.OrderedDict(drift=new))
      server = self.store.server
      self.store.server = collections.OrderedDict(
          drift_sum=[s + n - o for s, n, o in zip(server['drift_sum'], new, ck)],
          count=[server['count'][0] + np.float32(0 if was_stored else 1)])
      deltas.append(delta)
    mean_delta = ([np.mean(np.stack(parts), axis=0) for parts in zip(*deltas)] if deltas
                  else [np.zeros_like(w) for w in state.global_model_weights.trainable])
    new_state, non_finite = server_lib.apply_server_update(self._server_optimizer, state,
                                                           mean_delta)
    return server_lib.round_output(
        new_state, non_finite, server_lib.train_metrics(*totals),
        collections.OrderedDict(contributing_clients=len(deltas),
                                clients_with_state=len(self.store)), name='drift_correction')

  def close(self):
    self._phase.close()


def check(config):
  """What its spec's fields cannot declare, refused in one line before tracing."""
  beta = registry.hparams_of(config)['drift_beta']
  if beta > 1:
    raise ValueError(f'--drift_beta must be in [0, 1], got {beta}')


def _build_process(task, client_optimizer, server_optimizer, model_aggregator=None,
                   with_attacks=False, drift_beta=0.0):
  """The process whose state the rounds advance (its `next` is not used)."""
  del with_attacks, drift_beta
  return tff_lab.algorithms.build_fedavg(task, client_optimizer, server_optimizer,
                                         weighted=False, model_aggregator=model_aggregator)


def _no_client_work(*args, **kwargs):
  raise ValueError('--algorithm=drift_correction has no stand-alone client work')


tff_lab.algorithms.register(tff_lab.algorithms.AlgorithmSpec(
    name='drift_correction',
    description='local SGD corrected by each client\'s stored drift (docs/extending.md)',
    build_process=_build_process, build_client_work=_no_client_work, weighted=False,
    hparams=collections.OrderedDict(drift_beta=tff_lab.algorithms.Hyperparameter(
        0.0, 'Drift correction strength β in [0, 1] (0: unweighted FedAvg).', minimum=0.0)),
    local_step=STEP, supports_secure_aggregation=False, client_state=('drift',), check=check,
    # What it does not run, declared: each is refused in one line before tracing.
    requires_client_sgd='its drift is a correction of SGD steps', aggregates_with='the plain mean',
    simulates_update_attacks=False,
    initial_store=initial_store, build_runner=DriftCorrectionRounds, fused_runner=True))
