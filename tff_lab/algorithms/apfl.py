"""APFL: a global model trained by FedAvg, and per client a personal model mixed with it.

Deng, Kamani, Mahdavi, "Adaptive Personalized Federated Learning" (arXiv:2003.13461),
Algorithm 1 with the adaptive mixing weight of §3.1 (eq. (8)). Client i keeps a local model v_i
and a mixing weight α_i; its personalised model is the mixture

    v̄_i = α_i·v_i + (1 − α_i)·w.

A round t with sampled clients S_t is, for client i, starting from w_i ← wᵗ, on each local batch
ξ (all three updates at the step's previous values, as in Algorithm 1):

    w_i ← w_i − η·∇f_i(w_i; ξ)                                           (FedAvg's local SGD)
    v_i ← v_i − η·∇_v f_i(v̄_i; ξ) = v_i − η·α_i·∇f_i(v̄_i; ξ)             (v̄_i = α_i v_i + (1−α_i) w_i)
    α_i ← clip_[0,1](α_i − η_α·⟨v_i − w_i, ∇f_i(v̄_i; ξ)⟩)                 (eq. (8))

then sends Δ_i = wᵗ − w_i (TFF's convention) and its example count n_i, and keeps v_i, α_i; the
server is FedAvg's: wᵗ⁺¹ ← server_optimizer(wᵗ, Σ_i n_i Δ_i / Σ_i n_i). η is the client learning
rate, η_α is `apfl_alpha_lr` (0 keeps every α_i at its initial value `apfl_alpha`). The global
model is exactly FedAvg's (weighted by examples processed, as tff_lab's `fedavg`).

How it runs here: as Ditto (`tff_lab.algorithms.ditto`), whose structure this module follows,
each client's v_i (its trainable arrays, state `personal_model`) and α_i (state `alpha`, one
float32 scalar) live in the engine's client store (`tff_lab.simulation.client_store`), which
checkpoints carry, so resume is exact. A client holds no state until it is first sampled; then
v_i starts from that round's global model wᵗ and α_i from `apfl_alpha`. A round is one TFF call
(broadcast wᵗ; per client, the three updates above in client-placed TensorFlow, one pass over
its dataset), then the weighted mean in NumPy and the server step every backend shares
(`tff_lab.simulation.server`). A client with no batch, or whose global update is not finite,
contributes nothing; its v_i and α_i are kept only if finite.

Personalised models are evaluated on each client's own test split by the per-client report
(`tff_lab.evaluation.personalization`): `personal_model_weights` is α_i·v_i + (1 − α_i)·w with w
the global model at evaluation time (and its non-trainable weights); the global model for a
client never sampled.

Scope: the `tff` backend; client SGD (the paper's); the plain weighted mean (no clipping, DP,
robust rules, compression or secure aggregation); no update attacks. The rest is refused before
tracing (`check`).
"""

import collections
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_lab.algorithms import ditto
from tff_lab.algorithms import fedavg
from tff_lab.algorithms import optimizers as optimizers_lib
from tff_lab.algorithms import spec as spec_lib
from tff_lab.metrics import accuracy as accuracy_lib
from tff_lab.simulation import client_store as client_store_lib
from tff_lab.simulation import plan as plan_lib
from tff_lab.simulation import server as server_lib
from tff_lab.tasks import task as task_lib

STATE = 'personal_model'
ALPHA = 'alpha'


def initial_store(task: task_lib.Task) -> client_store_lib.ClientStore:
  """A store where no client holds state yet (v_i starts from wᵗ, α_i from `apfl_alpha`)."""
  del task
  return client_store_lib.ClientStore(collections.OrderedDict)


def mixture(alpha: float, personal, global_trainable) -> list[np.ndarray]:
  """α·v + (1 − α)·w per variable, as float32."""
  a = np.float32(alpha)
  return [(a * np.asarray(v, np.float32) + (np.float32(1) - a) * np.asarray(w, np.float32)
           ).astype(np.float32) for v, w in zip(personal, global_trainable)]


def personal_model_weights(global_weights: tff.learning.models.ModelWeights,
                           store: client_store_lib.ClientStore, client_id: str
                           ) -> tff.learning.models.ModelWeights:
  """Client `client_id`'s personalised model α_i v_i + (1 − α_i) w (w: `global_weights`)."""
  if client_id not in store:
    return global_weights
  state = store.get(client_id)
  return tff.learning.models.ModelWeights(
      trainable=mixture(float(state[ALPHA][0]), state[STATE], global_weights.trainable),
      non_trainable=list(global_weights.non_trainable))


def build_client_phase(task: task_lib.Task, learning_rate: float, alpha_lr: float):
  """APFL's client phase: `(wᵗ, [OrderedDict(data=, personal=v_i, alpha=α_i)]) -> results`.

  Each result is `OrderedDict(delta=wᵗ − w_i, num_examples, num_steps, loss_sum, correct,
  personal=new v_i, alpha=new α_i, personal_loss_sum, personal_correct)` (the personal sums at
  the mixture v̄_i before each step), in the clients' order.
  """
  with tf.Graph().as_default():
    model = task.tff_model_fn()
  weights_type = tff.learning.models.weights_type_from_model(model)
  dataset_type = tff.SequenceType(tff.types.tensorflow_to_type(model.input_spec))
  input_type = tff.StructWithPythonType(
      [('data', dataset_type), ('personal', weights_type.trainable),
       ('alpha', tff.TensorType(np.float32))], collections.OrderedDict)
  learning_rate = float(learning_rate)
  alpha_lr = float(alpha_lr)
  kind = task.prediction_kind

  @tff.tensorflow.computation(weights_type, input_type)
  def client_update(global_weights, client_input):
    model = task.tff_model_fn()

    @tf.function
    def update(global_weights, data, personal, alpha):
      weights = tff.learning.models.ModelWeights.from_model(model)
      trainable = tuple(tf.nest.flatten(weights.trainable))
      anchor = tuple(tf.nest.flatten(global_weights.trainable))
      tf.nest.map_structure(lambda v, t: v.assign(t), weights, global_weights)

      def gradient_at(values, batch):
        for var, value in zip(trainable, values):
          var.assign(value)
        with tf.GradientTape() as tape:
          output = model.forward_pass(batch, training=True)
        grads = tape.gradient(output.loss, trainable,
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)
        n = tf.cast(output.num_examples, tf.float32)
        hits = tf.reduce_sum(accuracy_lib.correct_predictions(kind, batch['y'],
                                                              output.predictions))
        return grads, output, tf.cast(output.loss, tf.float32) * n, hits

      def step(carry, batch):
        w, v, a, totals = carry
        num_examples, num_steps, loss_sum, correct, p_loss, p_correct = totals
        g_w, output, loss, hits = gradient_at(w, batch)
        mixed = tuple(a * vi + (1.0 - a) * wi for vi, wi in zip(v, w))
        with tf.control_dependencies(g_w):
          g_m, _, m_loss, m_hits = gradient_at(mixed, batch)
        new_w = tuple(wi - learning_rate * g for wi, g in zip(w, g_w))
        new_v = tuple(vi - learning_rate * a * g for vi, g in zip(v, g_m))
        inner = tf.add_n([tf.reduce_sum((vi - wi) * g) for vi, wi, g in zip(v, w, g_m)])
        new_a = tf.clip_by_value(a - alpha_lr * inner, 0.0, 1.0)
        return new_w, new_v, new_a, (
            num_examples + tf.cast(output.num_examples, tf.int64), num_steps + 1,
            loss_sum + loss, correct + hits, p_loss + m_loss, p_correct + m_hits)

      zero = tf.constant(0.0)
      w, v, a, totals = data.reduce(
          (anchor, tuple(tf.nest.flatten(personal)), alpha,
           (tf.constant(0, tf.int64), tf.constant(0, tf.int64), zero, zero, zero, zero)), step)
      delta = [t - wi for t, wi in zip(anchor, w)]  # wᵗ − w_i, TFF's update convention
      return collections.OrderedDict(
          delta=delta, num_examples=totals[0], num_steps=totals[1], loss_sum=totals[2],
          correct=totals[3], personal=list(v), alpha=a, personal_loss_sum=totals[4],
          personal_correct=totals[5])

    return update(global_weights, client_input['data'], client_input['personal'],
                  client_input['alpha'])

  @tff.federated_computation(tff.FederatedType(weights_type, tff.SERVER),
                             tff.FederatedType(input_type, tff.CLIENTS))
  def client_phase(weights, client_inputs):
    return tff.federated_map(client_update, (tff.federated_broadcast(weights), client_inputs))

  return client_phase


class APFLRounds:
  """APFL rounds on the `tff` backend, advancing the state of a weighted FedAvg process.

  The `LearningAlgorithmState` is FedAvg's; v_i and α_i are in `store`.
  """

  def __init__(self, task: task_lib.Task, client_learning_rate: float,
               server_optimizer: tff.learning.optimizers.Optimizer,
               store: client_store_lib.ClientStore, alpha: float, alpha_lr: float):
    """Builds the round's TFF computation (tracing).

    Args:
      task: The task trained.
      client_learning_rate: η of the local steps of w_i and v_i.
      server_optimizer: Applies the weighted mean Δ (SGD at rate 1 is FedAvg's server step).
      store: The client store (v_i, α_i per client that was sampled).
      alpha: The initial α_i, in [0, 1].
      alpha_lr: η_α >= 0 (0 keeps α_i fixed).
    """
    if not 0.0 <= alpha <= 1.0:
      raise ValueError(f'apfl_alpha must be in [0, 1], got {alpha}')
    if not alpha_lr >= 0:
      raise ValueError(f'apfl_alpha_lr must be >= 0, got {alpha_lr}')
    self._server_optimizer = server_optimizer
    self._alpha = float(alpha)
    self.store = store
    self._client_phase = build_client_phase(task, client_learning_rate, alpha_lr)
    self._datasets = plan_lib.PlanDatasets(task)

  def next(self, state: Any, plan) -> tff.learning.templates.LearningProcessOutput:
    """One round on the plan's reporting clients (see the module docstring)."""
    global_trainable = [np.asarray(w) for w in state.global_model_weights.trainable]
    inputs = []
    for cid, ds in zip(plan.client_ids, self._datasets(plan)):
      held = self.store.get(cid) if cid in self.store else None
      inputs.append(collections.OrderedDict(
          data=ds, personal=held[STATE] if held else global_trainable,
          alpha=np.float32(held[ALPHA][0] if held else self._alpha)))
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
      alpha = np.asarray(result['alpha'], np.float32)
      if steps and np.isfinite(alpha) and all(np.all(np.isfinite(v)) for v in personal):
        self.store.set(cid, collections.OrderedDict([(STATE, personal), (ALPHA, [alpha])]))
      if steps == 0 or n == 0 or not all(np.all(np.isfinite(d)) for d in delta):
        continue  # no step taken, or a diverged client: weight 0, as in FedAvg
      deltas.append(delta)
      weights.append(n)
    mean_delta = (ditto.weighted_mean(deltas, weights) if deltas
                  else [np.zeros_like(w) for w in global_trainable])
    new_state, non_finite = server_lib.apply_server_update(self._server_optimizer, state,
                                                           mean_delta)
    n = totals[2]
    alphas = [float(self.store.get(c)[ALPHA][0]) for c in plan.client_ids if c in self.store]
    return server_lib.round_output(
        new_state, non_finite, server_lib.train_metrics(*totals), collections.OrderedDict(
            contributing_clients=len(deltas), clients_with_state=len(self.store),
            mean_alpha=float(np.mean(alphas)) if alphas else float('nan'),
            personal_train_loss=personal_loss / n if n else float('nan'),
            personal_train_accuracy=personal_correct / n if n else float('nan')), name='apfl')

  def personal_model_weights(self, global_weights, client_id: str):
    """Client `client_id`'s personalised model (`personal_model_weights`)."""
    return personal_model_weights(global_weights, self.store, client_id)

  def close(self) -> None:
    pass


def _hparams(config) -> 'collections.OrderedDict[str, Any]':
  # pylint: disable-next=g-import-not-at-top  (the registry imports this module)
  from tff_lab.algorithms import registry
  return registry.hparams_of(config)


def check(config) -> None:
  """Refuses, in one line, what this APFL does not implement (see the module docstring)."""
  alpha = float(_hparams(config)['apfl_alpha'])
  if not 0.0 <= alpha <= 1.0:
    raise ValueError(f'apfl_alpha must be in [0, 1], got {alpha}')


def build_runner(context, store: client_store_lib.ClientStore) -> APFLRounds:
  """The `tff` backend's runner for APFL (`tff_lab.simulation.backends`)."""
  config = context.config
  hparams = _hparams(config)
  return APFLRounds(
      context.task, config.client_learning_rate,
      optimizers_lib.create_optimizer(config.server_optimizer, config.server_learning_rate,
                                      **config.server_optimizer_hparams),
      store, float(hparams['apfl_alpha']), float(hparams['apfl_alpha_lr']))


def _build_process(task, client_optimizer, server_optimizer, model_aggregator=None,
                   with_attacks=False, apfl_alpha=0.25, apfl_alpha_lr=0.0):
  """The process whose state APFL advances: weighted FedAvg's (model, server optimiser).

  Its own `next` is FedAvg's, which trains the same global model but no personal models: APFL
  rounds need the client store and run through `APFLRounds`.
  """
  del with_attacks, apfl_alpha, apfl_alpha_lr
  return fedavg.build_fedavg(task, client_optimizer, server_optimizer, weighted=True,
                             model_aggregator=model_aggregator)


def _build_client_work(task, client_optimizer, with_attacks=False, apfl_alpha=0.25,
                       apfl_alpha_lr=0.0):
  raise ValueError('--algorithm=apfl has no stand-alone client work: its clients need their '
                   'personal models and mixing weights (APFLRounds)')


SPEC = spec_lib.AlgorithmSpec(
    name='apfl',
    description='APFL: FedAvg plus per client a local model mixed with the global one by an '
    'adaptive α (Deng et al., 2020)',
    build_process=_build_process, build_client_work=_build_client_work,
    weighted=True,
    hparams=collections.OrderedDict(
        apfl_alpha=spec_lib.Hyperparameter(
            0.25, "APFL's initial mixing weight α_i in [0, 1] (personalised model "
            "α v + (1 − α) w).", minimum=0.0),
        apfl_alpha_lr=spec_lib.Hyperparameter(
            0.01, "APFL's step size η_α for the adaptive α (eq. (8)); 0 keeps α fixed.",
            minimum=0.0)),
    local_step=spec_lib.PLAIN_SGD, supports_secure_aggregation=False,
    requires_client_sgd="the paper's",
    aggregates_with='the plain weighted mean', simulates_update_attacks=False,
    client_state=(STATE, ALPHA), check=check, initial_store=initial_store,
    build_runner=build_runner)
