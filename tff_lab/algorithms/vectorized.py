"""In-graph simulation of FedAvg/FedProx rounds: every sampled client's local SGD in one TF program.

TFF's runtime executes each client's local training as a separate computation call in its C++
worker, with each client's dataset serialised into the call. For small models the round is then
dominated by per-client overhead, not arithmetic (BUILD.md, "Where a round's time goes"). These
paths keep the mathematics and change only the scheduling (FedJAX's `for_each_client` idea): the
sampled clients' batches are packed into one tensor [clients, steps, batch, ...]
(`tff_lab.data.packing`, by example indices, without building tf.data datasets) and one TF
program runs the whole round, the server's weighted mean included (a round of more than
`clients_per_program` clients runs the program on consecutive groups and adds their sums, so its
memory is bounded). Two schedules:

* `client_loop='sequential'` (`--simulation=fused`): a `tf.while_loop` over clients, each running
  its own `tf.while_loop` over its local steps on the unbatched model; two clients overlap
  (`parallel_iterations`). Every step is the same small matmul as centralised training, so on a
  CPU the round costs about what centralised training on the same examples costs, and clients
  with fewer steps cost less. The fastest path here (BUILD.md, "Round throughput").
* `client_loop='vectorized_map'` (`--simulation=vectorized`): each local step is taken for all
  clients at once with `tf.vectorized_map` over per-client copies of the weights (batched
  matmuls). Every client pays for the longest client's steps; on 2 CPU cores it is slower than
  the sequential loop, and for convolutions pfor falls back to a loop (`Conv2DBackpropFilter`).
  It may pay off where batched matmuls are cheap (accelerators; not measured: none here).

Per client k (identical to `tff_lab.algorithms.client_work`):

    w ← wᵗ;  for each batch b of the client's preprocessed dataset (same order, same batches):
        g ← ∇ mean_{i∈b} ℓ(w; x_i, y_i) + μ·(w − wᵗ);   w ← w − η·g
    Δ_k = wᵗ − w  (zeroed, with weight 0, if not finite);  weight n_k (or 1, unweighted)

Server: Δ = Σ_k weight_k·Δ_k / Σ_k weight_k, applied with the server optimiser exactly as TFF's
`build_apply_optimizer_finalizer` does. `tests/algorithms/test_vectorized.py` checks that states
after several rounds equal the TFF path's to float32 round-off, for both schedules.

With another client optimiser (`client_optimizer`: sgdm, adam, adagrad, yogi) the step is
`s, w ← opt.next(s, w, g)` instead, the optimiser state s fresh (`opt.initialize`) for each client
each round, its learning rate the client rate η (scheduled or not), as the client work does.

Scope (checked by `check_supported`): any `tff.learning.optimizers` client optimiser; model
weights all trainable; the default (mean) aggregation; no update-altering attacks (label
flipping, dropouts and stragglers are data-side and supported). Models with many predictions per
example train as in TFF: a sequence model's loss is the mean over its batch × positions (TFF's
Keras loss), and the accuracy counts one prediction per non-padding target
(`tff_lab.metrics.accuracy.prediction_counts`); the vectorized loop cannot take recurrent layers
(`tff_lab.simulation.backends.check_task`).

The model is applied through TFF's `functional_model_from_keras`, which needs a TF1-style graph;
the round program is therefore built once in its own `tf.Graph` and run with a session.
"""

import collections
from collections.abc import Sequence
import functools
from typing import Any, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_lab.algorithms import schedules
from tff_lab.algorithms import spec as spec_lib
from tff_lab.data import packing
from tff_lab.faults import simulation as faults_lib
from tff_lab.metrics import accuracy as accuracy_lib
from tff_lab.simulation import server as server_lib
from tff_lab.tasks import task as task_lib


def check_supported(client_optimizer: str, model_aggregator_is_default: bool,
                    update_attacks: bool, simulation: str = 'vectorized') -> None:
  """Raises ValueError (one line) for settings the in-graph paths do not implement."""
  del client_optimizer  # every client optimiser runs in-graph (`_local_step`)
  if not model_aggregator_is_default:
    raise ValueError(f'--simulation={simulation} supports the default mean aggregation only')
  if update_attacks:
    raise ValueError(f'--simulation={simulation} does not simulate update attacks; use '
                     '--simulation=tff (label_flip, dropouts and stragglers are supported)')


CLIENT_LOOPS = ('sequential', 'vectorized_map')
# The client loop of each in-graph `--simulation` backend (tff_lab.simulation.backends).
SIMULATION_CLIENT_LOOPS = {'fused': 'sequential', 'vectorized': 'vectorized_map'}
# Clients of the sequential loop that may run at once (TF while_loop parallel_iterations): two
# overlap the small per-step ops on a 2-core machine; more measured no faster.
_PARALLEL_CLIENTS = 2


class VectorizedRounds:
  """Runs FedAvg/FedProx rounds on the state of an equivalent TFF learning process.

  The state is the `LearningAlgorithmState` of the TFF process built for the same settings
  (`process.initialize()`, checkpoints, `get_model_weights` all keep working); only `next`
  differs. Its output mirrors `process.next`'s: `.state` and `.metrics` with the same keys.
  """

  def __init__(self, task: task_lib.Task, client_learning_rate: float,
               server_optimizer: tff.learning.optimizers.Optimizer,
               hparams: Optional[dict] = None,
               weighted: bool = True, client_loop: str = 'sequential',
               clients_per_program: int = 128,
               local_step: spec_lib.LocalStep = spec_lib.PROXIMAL_SGD,
               client_optimizer: Optional[tff.learning.optimizers.Optimizer] = None):
    """Builds the round program.

    Args:
      task: The task; its ClientSpec is the clients' local work.
      client_learning_rate: η of the clients' SGD.
      server_optimizer: Applied to the mean update, as TFF's finalizer does.
      hparams: The local step's hyperparameters (e.g. FedProx's `mu`; none: FedAvg).
      weighted: Weight client updates by their number of examples (else equally).
      client_loop: `sequential` or `vectorized_map` (see the module docstring).
      clients_per_program: Clients packed into one run of the program; a round with more runs
        it on consecutive groups and adds their sums (float32 round-off apart, the same round).
      local_step: The algorithm's local step (its spec's), taking `hparams`.
      client_optimizer: The clients' optimiser (None: SGD), its rate `client_learning_rate`.
    """
    if client_loop not in CLIENT_LOOPS:
      raise ValueError(f'client_loop must be one of {CLIENT_LOOPS}, got {client_loop!r}')
    if clients_per_program < 1:
      raise ValueError(f'clients_per_program must be >= 1, got {clients_per_program}')
    self._clients_per_program = clients_per_program
    self._server_optimizer = server_optimizer
    self._weighted = weighted
    self._program = _Program(task, client_learning_rate, local_step, hparams, client_optimizer)
    program = self._program
    self._w0, self._x, self._y, self._mask = program.w0, program.x, program.y, program.mask
    with program.graph.as_default():
      build = (self._sequential_clients if client_loop == 'sequential'
               else self._vectorized_clients)
      self._outputs = self._sums(*build(program.step_fn))

  def _client_weight(self, num_examples, finite):
    return (num_examples if self._weighted else tf.ones_like(num_examples)) * tf.cast(
        finite, tf.float32)

  def _vectorized_clients(self, step_fn):
    """All clients' step s at once (vectorized_map); returns Σ weight·Δ and the sums."""
    w0, x, y, mask = self._w0, self._x, self._y, self._mask
    num_clients, num_steps = tf.shape(x)[0], tf.shape(x)[1]

    def body(s, w, opt, loss_sum, correct_sum, batches, predictions):
      new_w, opt, loss_s, correct_s, step, predictions_s = tf.vectorized_map(
          lambda args: step_fn(*args), (w, opt, x[:, s], y[:, s], mask[:, s]))
      return (s + 1, new_w, opt, loss_sum + loss_s, correct_sum + correct_s, batches + step,
              predictions + predictions_s)

    zeros = tf.zeros([num_clients])
    start = [tf.repeat(w[None], num_clients, axis=0) for w in w0]
    opt = self._program.optimizer_state(num_clients)
    _, w_final, _, loss_sum, correct_sum, batches, predictions = tf.while_loop(
        lambda s, *_: s < num_steps, body, (0, start, opt, zeros, zeros, zeros, zeros))
    num_examples = tf.reduce_sum(mask, axis=[1, 2])
    deltas = [w[None] - wf for w, wf in zip(w0, w_final)]
    finite = tf.reduce_all(tf.stack([
        tf.reduce_all(tf.math.is_finite(tf.reshape(d, [num_clients, -1])), axis=1)
        for d in deltas]), axis=0)
    weights = self._client_weight(num_examples, finite)
    deltas = [tf.where(tf.reshape(finite, [-1] + [1] * (len(d.shape) - 1)), d, tf.zeros_like(d))
              for d in deltas]
    weighted_sum = [tf.tensordot(weights, d, axes=1) for d in deltas]
    return (weighted_sum, tf.reduce_sum(weights), tf.reduce_sum(loss_sum),
            tf.reduce_sum(correct_sum), tf.reduce_sum(num_examples), tf.reduce_sum(batches),
            tf.reduce_sum(1 - tf.cast(finite, tf.int32)), tf.reduce_sum(predictions))

  def _sequential_clients(self, step_fn):
    """One client after another, each over its own steps only; returns Σ weight·Δ and the sums."""
    w0, x, y, mask = self._w0, self._x, self._y, self._mask
    num_clients = tf.shape(x)[0]
    has_batch = tf.reduce_sum(mask, axis=2) > 0
    # Packed batches are front-filled, so a client's steps are its first `steps[k]`.
    steps = tf.reduce_sum(tf.cast(has_batch, tf.int32), axis=1)

    def client(k, weighted_sum, weight_sum, loss_sum, correct_sum, batches, non_finite,
               predictions):
      xk, yk, mk = x[k], y[k], mask[k]

      def local_step(s, w, opt, client_loss, client_correct, client_predictions):
        new_w, opt, batch_loss, correct, _, batch_predictions = step_fn(w, opt, xk[s], yk[s],
                                                                       mk[s])
        return (s + 1, new_w, opt, client_loss + batch_loss, client_correct + correct,
                client_predictions + batch_predictions)

      _, w_final, _, client_loss, client_correct, client_predictions = tf.while_loop(
          lambda s, *_: s < steps[k], local_step,
          (0, list(w0), self._program.optimizer_state(), 0.0, 0.0, 0.0))
      delta = [a - b for a, b in zip(w0, w_final)]
      finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(d)) for d in delta])
      weight = self._client_weight(tf.reduce_sum(mk), finite)
      weighted_sum = [acc + tf.where(finite, weight * d, tf.zeros_like(d))
                      for acc, d in zip(weighted_sum, delta)]
      return (k + 1, weighted_sum, weight_sum + weight, loss_sum + client_loss,
              correct_sum + client_correct, batches + tf.cast(steps[k], tf.float32),
              non_finite + 1 - tf.cast(finite, tf.int32), predictions + client_predictions)

    (_, weighted_sum, weight_sum, loss_sum, correct_sum, batches, non_finite,
     predictions) = tf.while_loop(
         lambda k, *_: k < num_clients, client,
         (0, [tf.zeros_like(w) for w in w0], 0.0, 0.0, 0.0, 0.0, 0, 0.0),
         parallel_iterations=_PARALLEL_CLIENTS)
    return (weighted_sum, weight_sum, loss_sum, correct_sum, tf.reduce_sum(mask), batches,
            non_finite, predictions)

  def _sums(self, weighted_sum, weight_sum, loss_sum, correct, num_examples, num_batches,
            non_finite, predictions):
    return collections.OrderedDict(
        weighted_sum=weighted_sum, weight_sum=weight_sum, loss_sum=loss_sum, correct=correct,
        num_examples=num_examples, num_batches=num_batches, non_finite=non_finite,
        predictions=predictions)

  def pack(self, client_inputs: Sequence[Any]) -> dict[str, np.ndarray]:
    """The round's arrays from `ClientPlan`s (by index, fast) or from finished datasets."""
    return self._program.pack(client_inputs)

  def next(self, state, client_inputs: Sequence[Any]) -> Any:
    """One round on the reporting clients.

    Args:
      state: The TFF process's state.
      client_inputs: `tff_lab.faults.ClientPlan`s (the fast path: packed by index), or the
        preprocessed datasets `process.next` would take.
    """
    weights = state.global_model_weights
    # At most `clients_per_program` clients per run, so a round's packed batches (and the
    # vectorised path's per-client weight copies) stay bounded however many clients it has.
    out = None
    for start in range(0, len(client_inputs), self._clients_per_program):
      packed = self.pack(client_inputs[start:start + self._clients_per_program])
      feed = self._program.feed(weights.trainable, packed, schedules.client_rate_in(state))
      part = self._program.session.run(self._outputs, feed)
      out = part if out is None else tf.nest.map_structure(np.add, out, part)
    if out is None or not out['num_examples']:
      raise ValueError('every sampled client has an empty dataset')
    weight_sum = np.float32(out['weight_sum'])
    mean_delta = [s / weight_sum if weight_sum else np.zeros_like(s)  # as tf.divide_no_nan
                  for s in out['weighted_sum']]
    # The server step, exactly as TFF's `build_apply_optimizer_finalizer` (shared by backends).
    new_state, non_finite = server_lib.apply_server_update(self._server_optimizer, state,
                                                           mean_delta)
    return server_lib.round_output(
        new_state, non_finite, server_lib.train_metrics(
            out['loss_sum'], out['correct'], out['num_examples'], out['num_batches'],
            num_predictions=out['predictions']),
        aggregator_metrics=server_lib.dense_communication_metrics(len(client_inputs),
                                                                  weights.trainable))

  def close(self) -> None:
    self._program.close()


class _Program:
  """What both in-graph programs share: the model applied functionally in a TF1 graph, the
  round's placeholders (start weights, packed batches and masks, the client rate), one client's
  local step on one padded batch (`step_fn`), a client's fresh optimiser state
  (`optimizer_state`), the packing of plans, and the session."""

  def __init__(self, task: task_lib.Task, client_learning_rate: float,
               local_step: spec_lib.LocalStep, hparams: Optional[dict] = None,
               client_optimizer: Optional[tff.learning.optimizers.Optimizer] = None):
    # Plain SGD keeps the stateless update `w − η·g` (no optimiser state in the loops).
    self._optimizer = None if _is_plain_sgd(client_optimizer) else client_optimizer
    if self._optimizer is not None:
      _check_client_optimizer(self._optimizer, client_learning_rate)
    self._task = task
    keras_model = task.model_fn()
    self._num_classes = int(keras_model.output_shape[-1])  # for label-flipping plans
    self._packer = (packing.ClientBatchPacker(task, self._num_classes)
                    if packing.ClientBatchPacker.supports(task) else None)
    loss = task.loss_fn(reduction=tf.keras.losses.Reduction.NONE)
    spec = task.batch_spec
    model = tff.learning.models.functional_model_from_keras(
        keras_model, loss, input_spec=(spec['x'], spec['y']))
    trainable, non_trainable = model.initial_weights
    if non_trainable:
      raise ValueError('in-graph simulation needs a model without non-trainable weights')
    self.shapes = [np.shape(w) for w in trainable]
    self.graph = tf.Graph()
    with self.graph.as_default():
      self.w0 = [tf.compat.v1.placeholder(tf.float32, s) for s in self.shapes]
      self.x = tf.compat.v1.placeholder(spec['x'].dtype, [None, None] + spec['x'].shape.as_list())
      self.y = tf.compat.v1.placeholder(spec['y'].dtype, [None, None] + spec['y'].shape.as_list())
      self.mask = tf.compat.v1.placeholder(tf.float32, [None, None, None])
      # The clients' rate; a scheduled one is fed each round (the client work's state).
      self.lr = tf.compat.v1.placeholder_with_default(np.float32(client_learning_rate), [])
      self.step_fn = functools.partial(_local_step, model, loss, task.prediction_kind, self.lr,
                                       local_step, dict(hparams or {}), self.w0, self._optimizer)
    self._session = None

  def optimizer_state(self, num_clients: Optional[tf.Tensor] = None) -> Any:
    """A client's fresh optimiser state at the client rate, stacked for `num_clients` clients
    if given (the vectorized loop); `()` for plain SGD. Built into the round's program, so
    each client starts from `initialize` each round, as the client work does."""
    if self._optimizer is None:
      return ()
    state = collections.OrderedDict(self._optimizer.initialize(
        [tf.TensorSpec(s, tf.float32) for s in self.shapes]))
    # The client rate (fed when scheduled) in place of the optimiser's, as the client work does.
    state[tff.learning.optimizers.LEARNING_RATE_KEY] = self.lr
    state = tf.nest.map_structure(tf.convert_to_tensor, state)
    if num_clients is None:
      return state
    return tf.nest.map_structure(
        lambda t: tf.repeat(t[None], num_clients, axis=0), state)

  @property
  def session(self) -> tf.compat.v1.Session:
    if self._session is None:  # after the caller has added its outputs to the graph
      self._session = tf.compat.v1.Session(graph=self.graph)
    return self._session

  def pack(self, client_inputs: Sequence[Any]) -> dict[str, np.ndarray]:
    """The round's arrays from `ClientPlan`s (by index, fast) or from finished datasets."""
    if client_inputs and isinstance(client_inputs[0], faults_lib.ClientPlan):
      if any(plan.attack is not None for plan in client_inputs):
        raise ValueError('in-graph simulation does not simulate update attacks')
      if self._packer is not None:
        return self._packer.pack(client_inputs)
      client_inputs = faults_lib.materialize_client_inputs(
          self._task, client_inputs, self._num_classes)
    return packing.pack_client_datasets(list(client_inputs))

  def feed(self, weights: Sequence[Any], packed: dict, rate: Optional[float] = None) -> dict:
    feed = {**dict(zip(self.w0, weights)), self.x: packed['x'], self.y: packed['y'],
            self.mask: packed['example_mask']}
    if rate is not None:  # a scheduled client rate
      feed[self.lr] = np.float32(rate)
    return feed

  def close(self) -> None:
    if self._session is not None:
      self._session.close()


class FusedClientPhase:
  """The `fused` backend's client phase for algorithms with their own runner (SCAFFOLD, FedDyn,
  FedNova): every client's local steps in one TF program, one client after another, returning
  each client's result as `tff_lab.algorithms.client_phase` does on the `tff` backend:

      OrderedDict(delta=x − y, num_examples, num_steps, loss_sum, correct, num_predictions)

  (`num_predictions`: what the accuracy divides `correct` by; the examples, or a sequence
  model's non-padding targets.)

  With `with_correction`, each client's correction (arrays shaped like the trainable weights)
  is fed with its batches and reaches the local step as `aux['correction']`.
  """

  def __init__(self, task: task_lib.Task, learning_rate: float, local_step: spec_lib.LocalStep,
               with_correction: bool = False, hparams: Optional[dict] = None,
               client_optimizer: Optional[tff.learning.optimizers.Optimizer] = None):
    """Builds the client phase's program.

    Args:
      task: The task; its ClientSpec is the clients' local work.
      learning_rate: The client rate η (a scheduled one is passed to `__call__`).
      local_step: The algorithm's local step, taking `hparams` (and the correction).
      with_correction: Feed each client's correction with its batches.
      hparams: The local step's hyperparameters.
      client_optimizer: The clients' optimiser (None: SGD), its rate `learning_rate`.
    """
    self._program = program = _Program(task, learning_rate, local_step, hparams,
                                       client_optimizer)
    self._with_correction = with_correction
    with program.graph.as_default():
      self._corrections = ([tf.compat.v1.placeholder(tf.float32, [None, *s])
                            for s in program.shapes] if with_correction else None)
      self._outputs = self._per_client()

  @property
  def shapes(self) -> list[tuple[int, ...]]:
    """The shapes of the model's trainable weights (of each client's delta)."""
    return self._program.shapes

  def _per_client(self):
    p = self._program
    w0, x, y, mask = p.w0, p.x, p.y, p.mask
    num_clients = tf.shape(x)[0]
    has_batch = tf.reduce_sum(mask, axis=2) > 0
    steps = tf.reduce_sum(tf.cast(has_batch, tf.int32), axis=1)  # front-filled batches

    def client(k, deltas, losses, corrects, predictions):
      xk, yk, mk = x[k], y[k], mask[k]
      aux = (None if self._corrections is None
             else {'correction': tuple(c[k] for c in self._corrections)})

      def local_step(s, w, opt, client_loss, client_correct, client_predictions):
        new_w, opt, batch_loss, correct, _, batch_predictions = p.step_fn(
            w, opt, xk[s], yk[s], mk[s], aux=aux)
        return (s + 1, new_w, opt, client_loss + batch_loss, client_correct + correct,
                client_predictions + batch_predictions)

      _, w_final, _, client_loss, client_correct, client_predictions = tf.while_loop(
          lambda s, *_: s < steps[k], local_step,
          (0, list(w0), p.optimizer_state(), 0.0, 0.0, 0.0))
      deltas = [ta.write(k, a - b) for ta, a, b in zip(deltas, w0, w_final)]
      return (k + 1, deltas, losses.write(k, client_loss), corrects.write(k, client_correct),
              predictions.write(k, client_predictions))

    arrays = lambda: tf.TensorArray(tf.float32, size=num_clients)
    _, deltas, losses, corrects, predictions = tf.while_loop(
        lambda k, *_: k < num_clients, client,
        (0, [arrays() for _ in w0], arrays(), arrays(), arrays()),
        parallel_iterations=_PARALLEL_CLIENTS)
    return collections.OrderedDict(
        delta=[d.stack() for d in deltas], num_examples=tf.reduce_sum(mask, axis=[1, 2]),
        num_steps=steps, loss_sum=losses.stack(), correct=corrects.stack(),
        num_predictions=predictions.stack())

  def __call__(self, weights: Any, plan, corrections: Optional[Sequence[Any]] = None,
               rate: Optional[float] = None) -> list['collections.OrderedDict[str, Any]']:
    """Each reporting client's result, in the plan's order.

    Args:
      weights: The global `ModelWeights`.
      plan: The round's `tff_lab.simulation.plan.RoundPlan`.
      corrections: With `with_correction`, one list of arrays per reporting client.
      rate: The round's scheduled client learning rate (None: the one built in).
    """
    clients = list(plan.clients)
    if not clients:
      return []
    feed = self._program.feed(weights.trainable, self._program.pack(clients), rate)
    if self._with_correction:
      for i, placeholder in enumerate(self._corrections):
        feed[placeholder] = np.stack([np.asarray(c[i], np.float32) for c in corrections])
    out = self._program.session.run(self._outputs, feed)
    return [collections.OrderedDict(
        delta=[d[k] for d in out['delta']], num_examples=int(out['num_examples'][k]),
        num_steps=int(out['num_steps'][k]), loss_sum=float(out['loss_sum'][k]),
        correct=float(out['correct'][k]), num_predictions=float(out['num_predictions'][k]))
        for k in range(len(clients))]

  def close(self) -> None:
    self._program.close()


def _is_plain_sgd(optimizer: Optional[tff.learning.optimizers.Optimizer]) -> bool:
  """Whether `optimizer` is None or SGD without momentum (stateless: `w − η·g`)."""
  if optimizer is None:
    return True
  sgd = type(tff.learning.optimizers.build_sgdm(learning_rate=1.0))
  return (isinstance(optimizer, sgd) and
          set(optimizer.initialize([])) == {tff.learning.optimizers.LEARNING_RATE_KEY})


def _check_client_optimizer(optimizer, client_learning_rate: float) -> None:
  """One-line ValueError unless the optimiser's rate is the client rate (which replaces it)."""
  state = optimizer.initialize([])
  key = tff.learning.optimizers.LEARNING_RATE_KEY
  if key not in state:
    raise ValueError(f'the client optimiser {type(optimizer).__name__} has no {key!r}')
  rate = state[key]
  if not tf.is_tensor(rate) and not np.isclose(float(rate), float(client_learning_rate)):
    raise ValueError(f'the client optimiser\'s learning rate {rate} is not the client rate '
                     f'{client_learning_rate}')


def _local_step(model, loss_fn, kind, lr, local_step, hparams, w0, optimizer, w, opt, xb, yb,
                mb, aux=None):
  """One client's step on one padded batch: new weights and optimiser state, loss·count,
  correct, stepped.

  `local_step` (a `tff_lab.algorithms.spec.LocalStep`) turns the loss gradient into the
  direction taken, with the algorithm's `hparams` (and `aux`, what it reads from the client's
  state), exactly as TFF's client work does; the client optimiser (None: SGD at rate `lr`, no
  state, `opt` is `()`) then takes it as the gradient. A padding batch (the vectorized loop's)
  leaves weights and state as they are.
  """
  count = tf.reduce_sum(mb)
  with tf.GradientTape() as tape:
    tape.watch(w)
    preds = model.predict_on_batch((w, ()), xb, training=True)
    batch_loss = tf.math.divide_no_nan(tf.reduce_sum(_example_losses(loss_fn(yb, preds)) * mb),
                                       count)
  grads = tape.gradient(batch_loss, w, unconnected_gradients=tf.UnconnectedGradients.ZERO)
  step = tf.cast(count > 0, tf.float32)  # a client with no batch at this step stays put
  direction = local_step.gradient(grads, w, w0, hparams, aux=aux)  # the step, written once
  if optimizer is None:
    new_w = [wi - step * lr * di for wi, di in zip(w, direction)]
  else:  # as the client work: optimizer.next(state, weights, direction)
    new_opt, updated = optimizer.next(opt, list(w), list(direction))
    stepped = count > 0
    new_w = [tf.where(stepped, u, wi) for u, wi in zip(updated, w)]
    opt = tf.nest.map_structure(lambda n, o: tf.where(stepped, tf.cast(n, o.dtype), o),
                                collections.OrderedDict(new_opt), opt)
  correct, predictions = _correct_and_predictions(kind, yb, preds, mb)
  return new_w, opt, batch_loss * count, correct, step, predictions


def _example_losses(losses: tf.Tensor) -> tf.Tensor:
  """One loss per example: a sequence model's per-position losses [batch, time] averaged over
  positions. A batch's mean of these is then the mean over its batch × time positions, which is
  what TFF's Keras loss (`SUM_OVER_BATCH_SIZE`) takes."""
  if losses.shape.rank is None or losses.shape.rank <= 1:
    return losses
  return tf.reduce_mean(losses, axis=list(range(1, losses.shape.rank)))


def _correct_and_predictions(kind: str, yb, preds, mb) -> tuple[tf.Tensor, tf.Tensor]:
  """A padded batch's correct predictions and its number of predictions, as TFF's accuracy
  metric counts them (`tff_lab.metrics.accuracy`): one per example, or, for sequences and
  multi-label targets, one per non-padding target."""
  correct, predictions = accuracy_lib.prediction_counts(kind, yb, preds)
  return tf.reduce_sum(correct * mb), tf.reduce_sum(predictions * mb)
