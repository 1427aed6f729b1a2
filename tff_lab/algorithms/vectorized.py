"""A vectorised simulation of FedAvg/FedProx rounds: every client's local SGD in one TF program.

TFF's runtime executes each client's local training as a separate computation call in its C++
worker, with each client's dataset serialised into the call. For small models the round is then
dominated by per-client overhead, not arithmetic (BUILD.md, "Measured numbers"). This path keeps
the mathematics and changes only the scheduling (FedJAX's `for_each_client` idea): the sampled
clients' batches are stacked into one tensor [clients, steps, batch, ...] and each local SGD step
is taken for all clients at once with `tf.vectorized_map` over per-client copies of the weights.

Per client k (identical to `tff_lab.algorithms.client_work` with an SGD client optimiser):

    w ← wᵗ;  for each batch b of the client's preprocessed dataset (same order, same batches):
        g ← ∇ mean_{i∈b} ℓ(w; x_i, y_i) + μ·(w − wᵗ);   w ← w − η·g
    Δ_k = wᵗ − w  (zeroed, with weight 0, if not finite);  weight n_k (or 1, unweighted)

Server: Δ = Σ_k weight_k·Δ_k / Σ_k weight_k, applied with the server optimiser exactly as TFF's
`build_apply_optimizer_finalizer` does. Clients with fewer batches or a short last batch are
handled with masks, so padding never changes a result. `tests/algorithms/test_vectorized.py`
checks that states after several rounds equal the TFF path's to float32 round-off.

Scope (checked by `check_supported`): client optimiser `sgd`; model weights all trainable; the
default (mean) aggregation; no update-altering attacks (label flipping, dropouts and stragglers are
data-side and supported).

The model is applied through TFF's `functional_model_from_keras`, which needs a TF1-style graph;
the round program is therefore built once in its own `tf.Graph` and run with a session.
"""

import collections
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_lab.metrics import accuracy as accuracy_lib
from tff_lab.tasks import task as task_lib


def check_supported(client_optimizer: str, model_aggregator_is_default: bool,
                    update_attacks: bool) -> None:
  """Raises ValueError (one line) for settings the vectorised path does not implement."""
  if client_optimizer != 'sgd':
    raise ValueError(f'--simulation=vectorized supports --client_optimizer=sgd only, got '
                     f'{client_optimizer!r}')
  if not model_aggregator_is_default:
    raise ValueError('--simulation=vectorized supports the default mean aggregation only')
  if update_attacks:
    raise ValueError('--simulation=vectorized does not simulate update attacks; use '
                     '--simulation=tff (label_flip, dropouts and stragglers are supported)')


def _client_batches(datasets: list[tf.data.Dataset]) -> list[list[tuple[np.ndarray, np.ndarray]]]:
  """Every client's batches as NumPy, in order, read through a single tf.data iterator.

  One iterator per client costs milliseconds each in eager mode, which dominated a round; when
  the batch counts are known statically (they are for TFF's in-memory ClientData through the
  ClientSpec pipeline) the datasets are read in sequence with `choose_from_datasets`.
  """
  counts = [int(ds.cardinality()) for ds in datasets]
  if min(counts, default=0) < 0:  # unknown or infinite cardinality: read one by one
    return [[(b['x'], b['y']) for b in ds.as_numpy_iterator()] for ds in datasets]
  choice = tf.data.Dataset.from_tensor_slices(
      np.repeat(np.arange(len(datasets), dtype=np.int64), counts))
  merged = tf.data.Dataset.choose_from_datasets(datasets, choice)
  batches = iter(merged.as_numpy_iterator())
  return [[(b['x'], b['y']) for b in (next(batches) for _ in range(n))] for n in counts]


def pack_client_datasets(datasets: list[tf.data.Dataset]) -> dict[str, np.ndarray]:
  """Stacks batched client datasets into padded arrays with masks.

  Returns:
    `x` [C, S, B, ...], `y` [C, S, B, ...], `example_mask` [C, S, B] (1 for real examples),
    where S is the most batches any client has and B the largest batch size.
  """
  clients = _client_batches(datasets)
  steps = max(1, max(len(c) for c in clients))
  batch = max([len(y) for c in clients for _, y in c] or [1])
  first = next((c[0] for c in clients if c), None)
  if first is None:
    raise ValueError('every sampled client has an empty dataset')
  x = np.zeros((len(clients), steps, batch) + first[0].shape[1:], first[0].dtype)
  y = np.zeros((len(clients), steps, batch) + first[1].shape[1:], first[1].dtype)
  mask = np.zeros((len(clients), steps, batch), np.float32)
  for k, batches in enumerate(clients):
    for s, (xb, yb) in enumerate(batches):
      x[k, s, :len(yb)] = xb
      y[k, s, :len(yb)] = yb
      mask[k, s, :len(yb)] = 1.0
  return {'x': x, 'y': y, 'example_mask': mask}


class VectorizedRounds:
  """Runs FedAvg/FedProx rounds on the state of an equivalent TFF learning process.

  The state is the `LearningAlgorithmState` of the TFF process built for the same settings
  (`process.initialize()`, checkpoints, `get_model_weights` all keep working); only `next`
  differs. Its output mirrors `process.next`'s: `.state` and `.metrics` with the same keys.
  """

  def __init__(self, task: task_lib.Task, client_learning_rate: float,
               server_optimizer: tff.learning.optimizers.Optimizer, mu: float = 0.0,
               weighted: bool = True):
    self._server_optimizer = server_optimizer
    self._weighted = weighted
    loss = task.loss_fn(reduction=tf.keras.losses.Reduction.NONE)
    spec = task.batch_spec
    model = tff.learning.models.functional_model_from_keras(
        task.model_fn(), loss, input_spec=(spec['x'], spec['y']))
    trainable, non_trainable = model.initial_weights
    if non_trainable:
      raise ValueError('--simulation=vectorized needs a model without non-trainable weights')
    self._graph = tf.Graph()
    with self._graph.as_default():
      self._w0 = [tf.compat.v1.placeholder(tf.float32, np.shape(w)) for w in trainable]
      self._x = tf.compat.v1.placeholder(spec['x'].dtype, [None, None] + spec['x'].shape.as_list())
      self._y = tf.compat.v1.placeholder(spec['y'].dtype, [None, None] + spec['y'].shape.as_list())
      self._mask = tf.compat.v1.placeholder(tf.float32, [None, None, None])
      self._outputs = self._build_round(model, loss, task.prediction_kind,
                                        float(client_learning_rate), float(mu))
    self._session = tf.compat.v1.Session(graph=self._graph)

  def _build_round(self, model, loss_fn, kind, lr, mu):
    w0, x, y, mask = self._w0, self._x, self._y, self._mask
    num_clients, num_steps = tf.shape(x)[0], tf.shape(x)[1]

    def client_step(args):
      w, xb, yb, mb = args
      count = tf.reduce_sum(mb)
      with tf.GradientTape() as tape:
        tape.watch(w)
        preds = model.predict_on_batch((w, ()), xb, training=True)
        batch_loss = tf.math.divide_no_nan(tf.reduce_sum(loss_fn(yb, preds) * mb), count)
      grads = tape.gradient(batch_loss, w, unconnected_gradients=tf.UnconnectedGradients.ZERO)
      step = tf.cast(count > 0, tf.float32)  # clients with no batch at this step stay put
      new_w = [wi - step * lr * (gi + mu * (wi - w0i))
               for wi, gi, w0i in zip(w, grads, w0)]
      correct = tf.reduce_sum(accuracy_lib.correct_predictions(kind, yb, preds) * mb)
      return new_w, batch_loss * count, correct, step

    def body(s, w, loss_sum, correct_sum, batches):
      new_w, loss_s, correct_s, step = tf.vectorized_map(
          client_step, (w, x[:, s], y[:, s], mask[:, s]))
      return s + 1, new_w, loss_sum + loss_s, correct_sum + correct_s, batches + step

    zeros = tf.zeros([num_clients])
    start = [tf.repeat(w[None], num_clients, axis=0) for w in w0]
    _, w_final, loss_sum, correct_sum, batches = tf.while_loop(
        lambda s, *_: s < num_steps, body, (0, start, zeros, zeros, zeros))
    num_examples = tf.reduce_sum(mask, axis=[1, 2])
    deltas = [w[None] - wf for w, wf in zip(w0, w_final)]
    finite = tf.reduce_all(tf.stack([
        tf.reduce_all(tf.math.is_finite(tf.reshape(d, [num_clients, -1])), axis=1)
        for d in deltas]), axis=0)
    weights = (num_examples if self._weighted else tf.ones([num_clients])) * tf.cast(
        finite, tf.float32)
    deltas = [tf.where(tf.reshape(finite, [-1] + [1] * (len(d.shape) - 1)), d, tf.zeros_like(d))
              for d in deltas]
    weight_sum = tf.reduce_sum(weights)
    mean_delta = [tf.math.divide_no_nan(tf.tensordot(weights, d, axes=1), weight_sum)
                  for d in deltas]
    return collections.OrderedDict(
        mean_delta=mean_delta, loss_sum=tf.reduce_sum(loss_sum),
        correct=tf.reduce_sum(correct_sum), num_examples=tf.reduce_sum(num_examples),
        num_batches=tf.reduce_sum(batches), non_finite=tf.reduce_sum(1 - tf.cast(finite, tf.int32)))

  def next(self, state, client_datasets: list[tf.data.Dataset]) -> Any:
    """One round on `client_datasets` (preprocessed, as passed to `process.next`)."""
    packed = pack_client_datasets(client_datasets)
    weights = state.global_model_weights
    feed = {**dict(zip(self._w0, weights.trainable)), self._x: packed['x'],
            self._y: packed['y'], self._mask: packed['example_mask']}
    out = self._session.run(self._outputs, feed)
    # The server step, exactly as TFF's `build_apply_optimizer_finalizer`.
    as_tensors = lambda structure: tf.nest.map_structure(tf.convert_to_tensor, structure)
    optimizer_state, new_trainable = self._server_optimizer.next(
        as_tensors(state.finalizer), as_tensors(list(weights.trainable)),
        as_tensors(list(out['mean_delta'])))
    new_weights = tff.learning.models.ModelWeights(
        trainable=[np.asarray(w) for w in new_trainable],
        non_trainable=list(weights.non_trainable))
    finalizer_state = tf.nest.map_structure(np.asarray, optimizer_state)
    new_state = tff.learning.templates.LearningAlgorithmState(
        global_model_weights=new_weights, distributor=state.distributor,
        client_work=state.client_work, aggregator=state.aggregator,
        finalizer=_like(state.finalizer, finalizer_state))
    n = float(out['num_examples'])
    metrics = collections.OrderedDict(
        distributor=(),
        client_work=collections.OrderedDict(train=collections.OrderedDict(
            accuracy=float(out['correct']) / n if n else float('nan'),
            loss=float(out['loss_sum']) / n if n else float('nan'),
            num_examples=int(n), num_batches=int(out['num_batches']))),
        aggregator=collections.OrderedDict(),
        finalizer=collections.OrderedDict(update_non_finite=int(out['non_finite'] > 0)))
    return tff.learning.templates.LearningProcessOutput(new_state, metrics)

  def close(self) -> None:
    self._session.close()


def _like(template, values):
  """`values` in the container types of `template` (TFF keeps lists where TF returns tuples)."""
  return tf.nest.pack_sequence_as(template, tf.nest.flatten(values))
