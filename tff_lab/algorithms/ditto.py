"""Ditto: a global model trained by FedAvg, and per client a personal model pulled towards it.

Li, Hu, Beirami, Smith, "Ditto: Fair and Robust Federated Learning Through Personalization",
ICML 2021 (arXiv:2012.04221), Algorithm 1 with FedAvg as the global solver. Each client k solves

    min_v  h_k(v; w*) = F_k(v) + (λ/2)·‖v − w*‖²

beside the global objective G = FedAvg's. A round t with sampled clients S_t is

    client k:  w_k ← wᵗ;  s times:  w_k ← w_k − η·∇F_k(w_k)                (FedAvg's local SGD)
               v_k ← v_k (wᵗ when k is first seen);
               s times:  v_k ← v_k − η·(∇F_k(v_k) + λ·(v_k − wᵗ))           (personal model)
               sends Δ_k = wᵗ − w_k (TFF's convention) and its example count n_k; keeps v_k
    server:    wᵗ⁺¹ ← server_optimizer(wᵗ, Σ_k n_k Δ_k / Σ_k n_k)          (FedAvg, weighted)

with s the client's local steps (its batches over its epochs, the same for both models) and η
the client learning rate. Convention: λ multiplies the gradient λ·(v − w), the paper's update
(Algorithm 1, line 8), i.e. the proximal term is (λ/2)‖v − w‖²; it is FedProx's local step
(`tff_lab.algorithms.spec.PROXIMAL_SGD`) with μ = λ, anchored at the round's global model wᵗ.
λ = 0 trains each personal model alone from the first global model it received; λ → ∞ ties it
to the global model. The global model is exactly FedAvg's (weighted by examples processed, as
tff_lab's `fedavg`): Ditto adds personal models and changes nothing of w.

How it runs here: like SCAFFOLD (`tff_lab.algorithms.scaffold`), each client's personal model
v_k lives in the engine's client store (`tff_lab.simulation.client_store`, state
`personal_model`: its trainable arrays), which checkpoints carry, so resume is exact. A client
holds no state until it is first sampled; then v_k starts from the global model wᵗ of that
round. A round is one TFF call (broadcast wᵗ; per client, both local SGD runs in client-placed
TensorFlow, over the same dataset: the personal pass iterates it a second time, so with shuffling
it sees its own order), then the weighted mean in NumPy and the server step every backend
shares (`tff_lab.simulation.server`). A client with no batch, or whose global update is not
finite, contributes nothing; its v_k is kept only if finite.

Personal models are evaluated on each client's own test split by the per-client report
(`tff_lab.evaluation.personalization`): `personal_model_weights` is client k's model (v_k, and
the global model's non-trainable weights), the global model for a client never sampled.

Scope: the `tff` backend; client SGD (the paper's); the plain weighted mean (no clipping, DP,
robust rules, compression or secure aggregation: the personal models never leave the clients,
but these settings act on the global updates in TFF aggregators this runner does not run); no
update attacks. The rest is refused before tracing (`check`).
"""

import collections
from typing import Any, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_lab.algorithms import fedavg
from tff_lab.algorithms import optimizers as optimizers_lib
from tff_lab.algorithms import spec as spec_lib
from tff_lab.metrics import accuracy as accuracy_lib
from tff_lab.simulation import client_store as client_store_lib
from tff_lab.simulation import plan as plan_lib
from tff_lab.simulation import server as server_lib
from tff_lab.tasks import task as task_lib

STATE = 'personal_model'


def personal_step(lam: float) -> spec_lib.LocalStep:
  """The personal model's local step: FedProx's proximal step with μ = λ (∇F_k(v) + λ(v − wᵗ))."""
  hparams = {'mu': float(lam)}
  return spec_lib.LocalStep(
      lambda grads, weights, anchor, _, aux=None: spec_lib.PROXIMAL_SGD.gradient(
          grads, weights, anchor, hparams, aux))


def initial_store(task: task_lib.Task) -> client_store_lib.ClientStore:
  """A store where no client holds a personal model yet (each starts from wᵗ when first seen)."""
  del task
  return client_store_lib.ClientStore(collections.OrderedDict)


def personal_model_weights(global_weights: tff.learning.models.ModelWeights,
                           store: client_store_lib.ClientStore, client_id: str
                           ) -> tff.learning.models.ModelWeights:
  """Client `client_id`'s personal model: v_k, or the global model if it was never sampled."""
  if client_id not in store:
    return global_weights
  return tff.learning.models.ModelWeights(trainable=list(store.get(client_id)[STATE]),
                                          non_trainable=list(global_weights.non_trainable))


def weighted_mean(deltas: Sequence[Sequence[np.ndarray]], weights: Sequence[float]
                  ) -> list[np.ndarray]:
  """Σ_k n_k Δ_k / Σ_k n_k per variable, in float64, returned as float32."""
  w = np.asarray(weights, np.float64)
  return [(sum(wk * np.asarray(d, np.float64) for wk, d in zip(w, parts)) / w.sum()
           ).astype(np.float32) for parts in zip(*deltas)]


def _sgd(model, trainable, data, learning_rate, direction_fn, kind):
  """Local SGD of `model`'s `trainable` variables over `data`; returns the metric sums."""

  def step(totals, batch):
    num_examples, num_steps, loss_sum, correct = totals
    with tf.GradientTape() as tape:
      output = model.forward_pass(batch, training=True)
    grads = tape.gradient(output.loss, trainable,
                          unconnected_gradients=tf.UnconnectedGradients.ZERO)
    for var, d in zip(trainable, direction_fn(grads)):
      var.assign_sub(learning_rate * d)
    n = tf.cast(output.num_examples, tf.float32)
    hits = tf.reduce_sum(accuracy_lib.correct_predictions(kind, batch['y'], output.predictions))
    return (num_examples + tf.cast(output.num_examples, tf.int64), num_steps + 1,
            loss_sum + tf.cast(output.loss, tf.float32) * n, correct + hits)

  return data.reduce((tf.constant(0, tf.int64), tf.constant(0, tf.int64), tf.constant(0.0),
                      tf.constant(0.0)), step)


def build_client_phase(task: task_lib.Task, learning_rate: float, lam: float):
  """Ditto's client phase: `(wᵗ, [OrderedDict(data=, personal=v_k)]) -> list of per-client results`.

  Each result is `OrderedDict(delta=wᵗ − w_k, num_examples, num_steps, loss_sum, correct,
  personal=new v_k, personal_loss_sum, personal_correct)`, in the clients' order (TFF 0.87's
  execution context returns a client-placed value as a list, as
  `tff_lab.algorithms.client_phase` relies on).
  """
  with tf.Graph().as_default():
    model = task.tff_model_fn()
  weights_type = tff.learning.models.weights_type_from_model(model)
  dataset_type = tff.SequenceType(tff.types.tensorflow_to_type(model.input_spec))
  input_type = tff.StructWithPythonType(
      [('data', dataset_type), ('personal', weights_type.trainable)], collections.OrderedDict)
  learning_rate = float(learning_rate)
  kind = task.prediction_kind
  proximal = personal_step(lam)

  @tff.tensorflow.computation(weights_type, input_type)
  def client_update(global_weights, client_input):
    model = task.tff_model_fn()

    @tf.function
    def update(global_weights, data, personal):
      weights = tff.learning.models.ModelWeights.from_model(model)
      trainable = tuple(tf.nest.flatten(weights.trainable))
      anchor = tuple(tf.nest.flatten(global_weights.trainable))
      # The global model's local SGD (FedAvg's client).
      tf.nest.map_structure(lambda v, t: v.assign(t), weights, global_weights)
      totals = _sgd(model, trainable, data, learning_rate, tuple, kind)
      delta = [a - b for a, b in zip(anchor, trainable)]  # wᵗ − w_k, TFF's update convention
      with tf.control_dependencies(delta):
        # The personal model's proximal SGD, anchored at wᵗ.
        for var, value in zip(trainable, tf.nest.flatten(personal)):
          var.assign(value)
        p_totals = _sgd(model, trainable, data, learning_rate,
                        lambda g: proximal.gradient(g, trainable, anchor, {}), kind)
      new_personal = [tf.identity(v) for v in trainable]
      return collections.OrderedDict(
          delta=delta, num_examples=totals[0], num_steps=totals[1], loss_sum=totals[2],
          correct=totals[3], personal=new_personal, personal_loss_sum=p_totals[2],
          personal_correct=p_totals[3])

    return update(global_weights, client_input['data'], client_input['personal'])

  @tff.federated_computation(tff.FederatedType(weights_type, tff.SERVER),
                             tff.FederatedType(input_type, tff.CLIENTS))
  def client_phase(weights, client_inputs):
    return tff.federated_map(client_update, (tff.federated_broadcast(weights), client_inputs))

  return client_phase


class DittoRounds:
  """Ditto rounds on the `tff` backend, advancing the state of a weighted FedAvg process.

  The `LearningAlgorithmState` is FedAvg's (its model and server optimiser state); the personal
  models are in `store`.
  """

  def __init__(self, task: task_lib.Task, client_learning_rate: float,
               server_optimizer: tff.learning.optimizers.Optimizer,
               store: client_store_lib.ClientStore, lam: float):
    """Builds the round's TFF computation (tracing).

    Args:
      task: The task trained.
      client_learning_rate: η of both local SGD runs.
      server_optimizer: Applies the weighted mean Δ (SGD at rate 1 is FedAvg's server step).
      store: The client store (v_k per client that was sampled).
      lam: λ >= 0 (see the module docstring for its convention).
    """
    if not lam >= 0:
      raise ValueError(f'ditto_lambda must be >= 0, got {lam}')
    self._server_optimizer = server_optimizer
    self.store = store
    self._client_phase = build_client_phase(task, client_learning_rate, lam)
    self._datasets = plan_lib.PlanDatasets(task)

  def next(self, state: Any, plan) -> tff.learning.templates.LearningProcessOutput:
    """One round on the plan's reporting clients (see the module docstring)."""
    global_trainable = [np.asarray(w) for w in state.global_model_weights.trainable]
    inputs = [collections.OrderedDict(
        data=ds, personal=(self.store.get(cid)[STATE] if cid in self.store
                           else global_trainable))
              for cid, ds in zip(plan.client_ids, self._datasets(plan))]
    results = self._client_phase(state.global_model_weights, inputs)
    deltas, weights = [], []
    totals = np.zeros(4)
    personal_loss, personal_correct = 0.0, 0.0
    for cid, result in zip(plan.client_ids, results):
      delta = [np.asarray(d, np.float32) for d in result['delta']]
      n, steps = int(result['num_examples']), int(result['num_steps'])
      totals += [float(result['loss_sum']), float(result['correct']), n, steps]
      personal_loss += float(result['personal_loss_sum'])
      personal_correct += float(result['personal_correct'])
      personal = [np.asarray(v, np.float32) for v in result['personal']]
      if steps and all(np.all(np.isfinite(v)) for v in personal):
        self.store.set(cid, collections.OrderedDict([(STATE, personal)]))
      if steps == 0 or n == 0 or not all(np.all(np.isfinite(d)) for d in delta):
        continue  # no step taken, or a diverged client: weight 0, as in FedAvg
      deltas.append(delta)
      weights.append(n)
    mean_delta = (weighted_mean(deltas, weights) if deltas
                  else [np.zeros_like(w) for w in global_trainable])
    new_state, non_finite = server_lib.apply_server_update(self._server_optimizer, state,
                                                           mean_delta)
    n = totals[2]
    return server_lib.round_output(
        new_state, non_finite, server_lib.train_metrics(*totals), collections.OrderedDict(
            contributing_clients=len(deltas), clients_with_state=len(self.store),
            personal_train_loss=personal_loss / n if n else float('nan'),
            personal_train_accuracy=personal_correct / n if n else float('nan')), name='ditto')

  def personal_model_weights(self, global_weights, client_id: str):
    """Client `client_id`'s personal model (`personal_model_weights`)."""
    return personal_model_weights(global_weights, self.store, client_id)

  def close(self) -> None:
    pass


def _lambda(config) -> float:
  # pylint: disable-next=g-import-not-at-top  (the registry imports this module)
  from tff_lab.algorithms import registry
  return float(registry.hparams_of(config)['ditto_lambda'])


def build_runner(context, store: client_store_lib.ClientStore) -> DittoRounds:
  """The `tff` backend's runner for Ditto (`tff_lab.simulation.backends`)."""
  config = context.config
  return DittoRounds(
      context.task, config.client_learning_rate,
      optimizers_lib.create_optimizer(config.server_optimizer, config.server_learning_rate,
                                      **config.server_optimizer_hparams),
      store, _lambda(config))


def _build_process(task, client_optimizer, server_optimizer, model_aggregator=None,
                   with_attacks=False, ditto_lambda=0.0):
  """The process whose state Ditto advances: weighted FedAvg's (model, server optimiser).

  Its own `next` is FedAvg's, which trains the same global model but no personal models: Ditto
  rounds need the client store and run through `DittoRounds`.
  """
  del with_attacks, ditto_lambda
  return fedavg.build_fedavg(task, client_optimizer, server_optimizer, weighted=True,
                             model_aggregator=model_aggregator)


def _build_client_work(task, client_optimizer, with_attacks=False, ditto_lambda=0.0):
  raise ValueError('--algorithm=ditto has no stand-alone client work: its clients need their '
                   'personal models (DittoRounds)')


SPEC = spec_lib.AlgorithmSpec(
    name='ditto',
    description='Ditto: FedAvg plus a personal model per client, proximal to the global one (Li '
    'et al., ICML 2021)',
    build_process=_build_process, build_client_work=_build_client_work,
    weighted=True,
    hparams=collections.OrderedDict(ditto_lambda=spec_lib.Hyperparameter(
        0.1, "Ditto's λ: personal step ∇F_k(v) + λ(v − wᵗ) (0: personal models train alone).",
        minimum=0.0)),
    local_step=spec_lib.PLAIN_SGD, supports_secure_aggregation=False,
    requires_client_sgd="the paper's",
    aggregates_with='the plain weighted mean', simulates_update_attacks=False,
    client_state=(STATE,), initial_store=initial_store, build_runner=build_runner)
