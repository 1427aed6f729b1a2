"""Local training on a client, as a `tff.learning.templates.ClientWorkProcess`.

Each client starts from the broadcast global weights wᵗ and runs its optimiser over its batches on

    h_k(w) = F_k(w) + (μ/2)·‖w − wᵗ‖²,   so the gradient used is ∇F_k(w) + μ·(w − wᵗ),

then reports its model delta wᵗ − w (TFF's convention: the server optimiser applies the delta as a
pseudo-gradient) weighted by its example count. μ = 0 is FedAvg's client; μ > 0 is FedProx's
(Li et al., MLSys 2020, arXiv:1812.06127, Algorithm 2).

Why not TFF's own FedProx client work: in TFF 0.87
(`learning/templates/proximal_client_work.py`) the proximal gradient is computed as
`μ · (initial − current)`, i.e. with the opposite sign, so the term pushes clients *away* from
the global model: larger μ moves clients further, and on the `synthetic` task μ = 10 diverges
(measured in tests/algorithms/test_client_work.py). This module uses the gradient of the paper's
objective, and the test checks it against NumPy.

The structure follows TFF's `build_model_delta_client_work` so the process composes with TFF's
distributors, aggregators and finalizers.

Byzantine clients (`with_attacks=True`). Each client's input is then
`OrderedDict(data=<dataset>, attack=OrderedDict(kind=, scale=, seed=))` and the client replaces
its honest delta Δ before reporting it (Blanchard et al. NeurIPS 2017; Bagdasaryan et al.
AISTATS 2020 for model replacement):

  kind 0 `none`      Δ
  kind 1 `sign_flip` −scale·Δ
  kind 2 `scale`     scale·Δ                (model replacement / boosting)
  kind 3 `gaussian`  N(0, scale²) per coordinate, from a stateless seed

Which clients attack, and how, is decided outside (`tff_lab.training.faults`), deterministically
per round; label flipping is a data-side attack and needs no help here.
"""

import collections
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_lab.algorithms import spec as spec_lib
from tff_lab.faults import simulation as faults_lib
from tff_lab.tasks import task as task_lib

# The attack input's encoding lives with the fault simulation that plans it (tff_lab.faults).
ATTACK_KINDS = faults_lib.ATTACK_KINDS
attack_spec = faults_lib.attack_spec


def _apply_attack(delta, attack):
  """Replaces an honest delta according to `attack` (see the module docstring)."""
  scale = attack['scale']

  def gaussian(d, i):  # drawn only in the Gaussian branch, not for every honest client
    return tf.random.stateless_normal(tf.shape(d), seed=tf.stack([attack['seed'], i]),
                                      dtype=d.dtype) * scale

  flat = tf.nest.flatten(delta)
  attacked = [tf.switch_case(attack['kind'], [lambda d=d: d, lambda d=d: -scale * d,
                                              lambda d=d: scale * d,
                                              lambda d=d, i=i: gaussian(d, i)])
              for i, d in enumerate(flat)]
  return tf.nest.pack_sequence_as(delta, attacked)


def _build_client_update(model_fn, mu: float, weighted: bool, loop_implementation):
  model = model_fn()
  reduce_loop = tff.learning.loop_builder.build_training_loop(loop_implementation)

  @tf.function
  def client_update(optimizer, initial_weights, data, attack=None, learning_rate=None):
    weights = tff.learning.models.ModelWeights.from_model(model)
    tf.nest.map_structure(lambda v, t: v.assign(t), weights, initial_weights)
    trainable = tuple(tf.nest.flatten(weights.trainable))
    anchor = tuple(tf.nest.flatten(initial_weights.trainable))

    def reduce_fn(state, batch):
      num_examples, optimizer_state = state
      with tf.GradientTape() as tape:
        output = model.forward_pass(batch, training=True)
      grads = tape.gradient(output.loss, trainable,
                            unconnected_gradients=tf.UnconnectedGradients.ZERO)
      grads = spec_lib.PROXIMAL_SGD.gradient(grads, trainable, anchor, {'mu': mu})
      optimizer_state, updated = optimizer.next(optimizer_state, trainable, grads)
      for var, value in zip(trainable, updated):
        var.assign(value)
      return num_examples + tf.cast(output.num_examples, tf.int64), optimizer_state

    def initial_state():
      specs = tuple(tf.TensorSpec(v.shape, v.dtype) for v in trainable)
      optimizer_state = optimizer.initialize(specs)
      if learning_rate is not None:  # the round's scheduled rate (TFF optimisers read it here)
        optimizer_state = collections.OrderedDict(optimizer_state)
        optimizer_state[tff.learning.optimizers.LEARNING_RATE_KEY] = learning_rate
      return tf.zeros([], tf.int64), optimizer_state

    num_examples, _ = reduce_loop(reduce_fn, data, initial_state)
    delta = tf.nest.map_structure(tf.subtract, initial_weights.trainable, weights.trainable)
    if attack is not None:
      delta = _apply_attack(delta, attack.get_single_element())
    delta, non_finite = tff.learning.tensor_utils.zero_all_if_any_non_finite(delta)
    honest_weight = tf.cast(num_examples, tf.float32) if weighted else tf.constant(1.0)
    weight = tf.cond(tf.equal(non_finite, 0), lambda: honest_weight, lambda: tf.constant(0.0))
    return (tff.learning.templates.ClientResult(update=delta, update_weight=weight),
            model.report_local_unfinalized_metrics())

  return client_update


def build_client_work(task: task_lib.Task, optimizer: tff.learning.optimizers.Optimizer,
                      mu: float = 0.0, weighted: bool = True, with_attacks: bool = False,
                      loop_implementation=tff.learning.LoopImplementation.DATASET_REDUCE,
                      scheduled_client_lr: Optional[float] = None,
                      state_only: bool = False,
                      ) -> tff.learning.templates.ClientWorkProcess:
  """Returns local (proximal) SGD on `task`'s model.

  Args:
    task: Provides `tff_model_fn` and the batch spec.
    optimizer: The client optimiser (`tff.learning.optimizers`).
    mu: Proximal strength μ ≥ 0.
    weighted: Weight each client's delta by its example count (else 1).
    with_attacks: Take `OrderedDict(data=, attack=attack_spec(...))` per client (see the module
      docstring) instead of a bare dataset.
    loop_implementation: How the client iterates its dataset.
    scheduled_client_lr: With a client learning-rate schedule, the first round's rate: the
      client work's state is then the round's client learning rate (float32, set before each
      round by `tff_lab.simulation.backends.ScheduledRunner`), broadcast to the clients, whose
      optimiser uses it in place of its own. None (default): the optimiser's own rate, and no
      state.
    state_only: Build `build_state_only_client_work`'s stand-in instead (same state and types,
      no training traced), for processes whose `next` is never called.
  """
  if mu < 0:
    raise ValueError(f'proximal strength mu must be >= 0, got {mu}')
  mu = float(mu)
  if state_only:
    return build_state_only_client_work(
        task, () if scheduled_client_lr is None else np.float32(scheduled_client_lr),
        with_attacks=with_attacks)
  with tf.Graph().as_default():
    model = task.tff_model_fn()
    metrics_aggregation_fn = tff.learning.metrics.sum_then_finalize(model.metric_finalizers())
  weights_type = tff.learning.models.weights_type_from_model(model)
  data_type = _client_data_type(model, with_attacks)

  def client_update(initial_weights, client_input, learning_rate):
    update = _build_client_update(task.tff_model_fn, mu, weighted, loop_implementation)
    if with_attacks:
      return update(optimizer, initial_weights, client_input['data'], client_input['attack'],
                    learning_rate)
    return update(optimizer, initial_weights, client_input, None, learning_rate)

  if scheduled_client_lr is None:
    client_update_computation = tff.tensorflow.computation(
        lambda initial_weights, client_input: client_update(initial_weights, client_input,
                                                            None), weights_type, data_type)
    initial_state = ()
  else:
    client_update_computation = tff.tensorflow.computation(client_update, weights_type,
                                                           data_type, np.float32)
    initial_state = np.float32(scheduled_client_lr)

  @tff.federated_computation
  def init_fn():
    return tff.federated_value(initial_state, tff.SERVER)

  @tff.federated_computation(init_fn.type_signature.result,
                             tff.FederatedType(weights_type, tff.CLIENTS),
                             tff.FederatedType(data_type, tff.CLIENTS))
  def next_fn(state, weights, client_data):
    client_args = (weights, client_data)
    if scheduled_client_lr is not None:  # the round's client rate, sent with the model
      client_args += (tff.federated_broadcast(state),)
    client_result, model_outputs = tff.federated_map(client_update_computation, client_args)
    measurements = tff.federated_zip(
        collections.OrderedDict(train=metrics_aggregation_fn(model_outputs)))
    return tff.templates.MeasuredProcessOutput(state, client_result, measurements)

  return tff.learning.templates.ClientWorkProcess(init_fn, next_fn)


def _client_data_type(model, with_attacks: bool):
  """A client's input type: its dataset, or `OrderedDict(data=, attack=)` with attacks."""
  dataset_type = tff.SequenceType(tff.types.tensorflow_to_type(model.input_spec))
  if not with_attacks:
    return dataset_type
  attack_type = tff.SequenceType(tff.types.to_type(collections.OrderedDict(
      kind=np.int32, scale=np.float32, seed=np.int32)))
  return tff.StructWithPythonType(
      [('data', dataset_type), ('attack', attack_type)], collections.OrderedDict)


def build_state_only_client_work(task: task_lib.Task, initial_state,
                                 with_attacks: bool = False, with_hparams: bool = False,
                                 ) -> tff.learning.templates.ClientWorkProcess:
  """A client work with a real one's state and types, which trains nothing.

  Backends that run the clients outside TFF (`--simulation=fused|vectorized`) use the learning
  process only for its state: `initialize`, `get_model_weights`, checkpoints, the server
  optimiser's and aggregator's state. Tracing the real client update for that (most of a run's
  start-up: the model's forward and backward pass over a dataset reduce) is wasted, so their
  process composes this stand-in instead. Its `initialize` gives `initial_state`, exactly the
  real client work's; its `next` has the real one's type signature but returns zero updates of
  weight 0 and no measurements. `composition.StateOnlyProcess` makes the process's `next`
  refuse to run, so it can never stand in for training.

  Args:
    task: The task whose model the real client work trains.
    initial_state: The real client work's initial state: `()` for `build_client_work` without a
      schedule, the first round's rate with one, the client optimiser's hyperparameters for
      TFF's `build_model_delta_client_work`.
    with_attacks: Clients take `OrderedDict(data=, attack=)` inputs, as `build_client_work`'s.
    with_hparams: Give `get_hparams`/`set_hparams` as TFF's `build_model_delta_client_work`
      does (its state is the optimiser's hyperparameters).
  """
  with tf.Graph().as_default():
    model = task.tff_model_fn()
  weights_type = tff.learning.models.weights_type_from_model(model)
  data_type = _client_data_type(model, with_attacks)

  @tff.federated_computation
  def init_fn():
    return tff.federated_value(initial_state, tff.SERVER)

  state_type = init_fn.type_signature.result.member

  @tff.tensorflow.computation(weights_type)
  def no_update(weights):
    return tff.learning.templates.ClientResult(
        update=tf.nest.map_structure(tf.zeros_like, weights.trainable),
        update_weight=tf.constant(0.0))

  @tff.federated_computation(init_fn.type_signature.result,
                             tff.FederatedType(weights_type, tff.CLIENTS),
                             tff.FederatedType(data_type, tff.CLIENTS))
  def next_fn(state, weights, client_data):
    del client_data
    return tff.templates.MeasuredProcessOutput(
        state, tff.federated_map(no_update, weights), tff.federated_value((), tff.SERVER))

  if not with_hparams:
    return tff.learning.templates.ClientWorkProcess(init_fn, next_fn)
  get_hparams_fn = tff.tensorflow.computation(lambda state: state, state_type)
  set_hparams_fn = tff.tensorflow.computation(lambda state, hparams: hparams, state_type,
                                              state_type)
  return tff.learning.templates.ClientWorkProcess(init_fn, next_fn, get_hparams_fn=get_hparams_fn,
                                                  set_hparams_fn=set_hparams_fn)
