"""The per-client evaluation report: how the global, personalised and fine-tuned models serve each
client, against what the client could reach training alone.

Personalisation research asks how a model serves *each* client, not only the average (Li, Hu,
Beirami, Smith, "Ditto: Fair and Robust Federated Learning Through Personalization", ICML 2021,
arXiv:2012.04221, §5, reports the mean and the worst clients' accuracy; Li, Sanjabi, Beirami,
Smith, "Fair Resource Allocation in Federated Learning", ICLR 2020, arXiv:1905.10497, Table 1,
the variance across clients); in cross-silo learning each organisation's incentive is its own
gain over training alone (Kairouz et al., "Advances and Open Problems in Federated Learning",
arXiv:1912.04977, §1.1). At every evaluation `ClientReport` evaluates, on each evaluation
client's own test split (the task's test clients),

* `global`: the global model;
* `personal`: each client's personalised model, for an algorithm that keeps one (its runner
  gives `personal_model_weights(global_weights, client_id)`, e.g. Ditto's; a client that never
  took part gets the global model);
* `finetuned` (`--finetune_epochs=k`, 0 = off): the global model after k local epochs of SGD on
  the client's training split (the client learning rate and batch size of training), the
  personalisation baseline of TFF's `tff.learning.algorithms.build_personalization_eval_computation`
  (Wang et al., "Federated Evaluation of On-device Personalization", arXiv:1910.10252);
* `local` (`--local_baseline_epochs=E`, 0 = off): each client's model trained alone, from the
  run's initial model, for E epochs of the same SGD. It does not depend on the federated model,
  so it is computed once (at the first evaluation) and carried by checkpoints.

For each model it writes to metrics (CSV and TensorBoard, as `fed_eval_<model>_...`) the
distribution of per-client accuracy, each client weighing the same: `accuracy_mean`,
`accuracy_var` (population variance, NumPy's `var`), `accuracy_p10`, `accuracy_p50`,
`accuracy_p90` (NumPy's linear percentiles of the exact values), `accuracy_worst` (the lowest
client), `num_clients`; and with a local baseline, `gain_fraction`, the fraction of clients whose
accuracy is strictly higher than their local-only model's, and `gain_mean`, the mean difference.
At the end of the run `write_final` saves each client's row (`clients.csv`) and a plot of each
client's accuracy against its size (`client_accuracy.png`; size = training examples).

Why not TFF's `build_personalization_eval_computation` itself: it returns the clients' metrics
through `tff.aggregators.UnweightedReservoirSamplingFactory`, a sample with no client identity and
no guaranteed order, while this report pairs each client with its size and its local baseline.
`build_finetune_evaluation` is its equivalent (broadcast, per client: evaluate, fine-tune,
evaluate, in client-placed TensorFlow) returning the per-client results in the clients' order
(TFF 0.87's execution context hands a client-placed value back as a list, as
`tff_lab.algorithms.client_phase` relies on); tests/evaluation/test_personalization.py checks
that both give the same per-client accuracies.

Unlike `tff_lab.evaluation.federated`, whose server sees only sums and a histogram, this report
handles per-client values: it is a simulation tool (under DP its `fed_eval_*` metrics are
withheld like the others, `tff_lab.training.release`). The cross-silo per-silo comparison
(`tff_lab.evaluation.per_silo.evaluate_per_silo`) is this report's `global` and `local` rows.
"""

import collections
import csv
import os
from typing import Any, Callable, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_lab.evaluation import federated
from tff_lab.metrics import accuracy as accuracy_lib
from tff_lab.tasks import task as task_lib

MODELS = ('global', 'personal', 'finetuned', 'local')
STATS = ('accuracy_mean', 'accuracy_var', 'accuracy_p10', 'accuracy_p50', 'accuracy_p90',
         'accuracy_worst', 'num_clients')
CSV_NAME = 'clients.csv'
PNG_NAME = 'client_accuracy.png'


def check_task(task: task_lib.Task, finetune_epochs: int = 0, local_baseline_epochs: int = 0
               ) -> None:
  """Raises a one-line ValueError if local training is asked of a task whose test clients have no
  training split (before any tracing)."""
  if not (finetune_epochs or local_baseline_epochs):
    return
  missing = sorted(set(task.test_data.client_ids) - set(task.train_data.client_ids))
  if missing:
    flag = '--finetune_epochs' if finetune_epochs else '--local_baseline_epochs'
    raise ValueError(f'{flag} trains each evaluation client on its training split, but '
                     f'{len(missing)} test client(s) of task {task.name!r} have none (e.g. '
                     f'{missing[0]!r})')


def _sums_to_result(sums) -> 'collections.OrderedDict[str, float]':
  n, predictions = float(sums['num_examples']), float(sums['num_predictions'])
  return collections.OrderedDict(
      accuracy=float(sums['correct']) / predictions if predictions else float('nan'),
      loss=float(sums['loss_sum']) / n if n else float('nan'), num_examples=int(n))


def build_per_client_evaluation(task: task_lib.Task, per_client_weights: bool = False):
  """`(weights, test datasets@CLIENTS) -> per-client evaluation sums`, as a list in order.

  With `per_client_weights` the weights are client-placed (one model per client, e.g. personal
  models); otherwise the server's weights are broadcast.
  """
  client_eval = federated.build_client_evaluation(task)
  weights_type, dataset_type = client_eval.type_signature.parameter
  placement = tff.CLIENTS if per_client_weights else tff.SERVER

  @tff.federated_computation(tff.FederatedType(weights_type, placement),
                             tff.FederatedType(dataset_type, tff.CLIENTS))
  def per_client_eval(weights, datasets):
    if not per_client_weights:
      weights = tff.federated_broadcast(weights)
    return tff.federated_map(client_eval, (weights, datasets))

  return per_client_eval


def _evaluate_fn(model, kind):
  """Loss and correct-prediction sums of a `tff.learning` model over a batched dataset."""

  def evaluate(dataset):
    def step(acc, batch):
      output = model.forward_pass(batch, training=False)
      n = tf.cast(output.num_examples, tf.float32)
      hits = accuracy_lib.correct_predictions(kind, batch['y'], output.predictions)
      return (acc[0] + tf.cast(output.loss, tf.float32) * n, acc[1] + tf.reduce_sum(hits),
              acc[2] + n, acc[3] + tf.cast(tf.size(hits), tf.float32))

    loss_sum, correct, count, predictions = dataset.reduce(
        (tf.constant(0.0), tf.constant(0.0), tf.constant(0.0), tf.constant(0.0)), step)
    return collections.OrderedDict(loss_sum=loss_sum, correct=correct, num_examples=count,
                                   num_predictions=predictions)

  return evaluate


def build_finetune_evaluation(task: task_lib.Task, learning_rate: float):
  """`(weights@SERVER, OrderedDict(train_data=, test_data=)@CLIENTS) -> per-client results`.

  Each client evaluates the broadcast model on its (batched) `test_data` (`before`), runs plain
  SGD at `learning_rate` over its (batched, repeated for the epochs wanted) `train_data`, and
  evaluates again (`after`); each is `OrderedDict(loss_sum, correct, num_examples,
  num_predictions)`. The results come back as a list in the clients' order.
  """
  with tf.Graph().as_default():
    model = task.tff_model_fn()
  weights_type = tff.learning.models.weights_type_from_model(model)
  dataset_type = tff.SequenceType(tff.types.tensorflow_to_type(model.input_spec))
  input_type = tff.StructWithPythonType(
      [('train_data', dataset_type), ('test_data', dataset_type)], collections.OrderedDict)
  learning_rate = float(learning_rate)
  kind = task.prediction_kind

  @tff.tensorflow.computation(weights_type, input_type)
  def client_finetune(weights, client_input):
    model = task.tff_model_fn()
    evaluate = _evaluate_fn(model, kind)

    @tf.function
    def run(initial, train_data, test_data):
      model_weights = tff.learning.models.ModelWeights.from_model(model)
      tf.nest.map_structure(lambda v, t: v.assign(t), model_weights, initial)
      trainable = tuple(tf.nest.flatten(model_weights.trainable))
      before = evaluate(test_data)

      def step(num_steps, batch):
        with tf.GradientTape() as tape:
          output = model.forward_pass(batch, training=True)
        grads = tape.gradient(output.loss, trainable,
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)
        for var, g in zip(trainable, grads):
          var.assign_sub(learning_rate * g)
        return num_steps + 1

      with tf.control_dependencies(tf.nest.flatten(before)):
        num_steps = train_data.reduce(tf.constant(0, tf.int64), step)
      with tf.control_dependencies([num_steps]):
        after = evaluate(test_data)
      return collections.OrderedDict(before=before, after=after, num_steps=num_steps)

    return run(weights, client_input['train_data'], client_input['test_data'])

  @tff.federated_computation(tff.FederatedType(weights_type, tff.SERVER),
                             tff.FederatedType(input_type, tff.CLIENTS))
  def finetune_eval(weights, client_inputs):
    return tff.federated_map(client_finetune, (tff.federated_broadcast(weights), client_inputs))

  return finetune_eval


def local_shuffle_seed(seed: int, position: int) -> int:
  """The shuffle seed of the `position`-th evaluation client's local training."""
  return int(np.random.SeedSequence([seed, position, 11]).generate_state(1)[0] >> 1)


def local_training_inputs(task: task_lib.Task, client_ids: Sequence[str], epochs: int,
                          seed: int) -> list:
  """Each client's `OrderedDict(train_data=, test_data=)`: `epochs` shuffled passes over its
  training split in the task's training batches (no `max_elements` cut), and its test split."""
  spec_task = task.with_train_spec(num_epochs=epochs, max_elements=None)
  return [collections.OrderedDict(
      train_data=spec_task.preprocess_train(task.train_data.create_tf_dataset_for_client(c),
                                            seed=local_shuffle_seed(seed, i)),
      test_data=task.preprocess_eval(task.test_data.create_tf_dataset_for_client(c)))
          for i, c in enumerate(client_ids)]


def train_locally(task: task_lib.Task, weights, client_ids: Sequence[str], epochs: int,
                  learning_rate: float, seed: int = 0, computation=None
                  ) -> list['collections.OrderedDict[str, float]']:
  """Each client's model trained alone from `weights` for `epochs` epochs of SGD, evaluated on its
  test split: one `OrderedDict(accuracy, loss, num_examples)` per client, in order.

  Raises:
    ValueError: For epochs < 1 or a learning rate <= 0.
  """
  if not (isinstance(epochs, int) and epochs >= 1):
    raise ValueError(f'epochs must be an integer >= 1, got {epochs!r}')
  if not learning_rate > 0:
    raise ValueError(f'learning_rate must be > 0, got {learning_rate}')
  computation = computation or build_finetune_evaluation(task, learning_rate)
  results = computation(weights, local_training_inputs(task, client_ids, epochs, seed))
  return [_sums_to_result(r['after']) for r in results]


def evaluate_each(task: task_lib.Task, weights, client_ids: Sequence[str], computation=None,
                  per_client_weights: bool = False) -> list['collections.OrderedDict[str, float]']:
  """`weights` (one model, or one per client) on each client's test split, in order."""
  computation = computation or build_per_client_evaluation(task, per_client_weights)
  datasets = [task.preprocess_eval(task.test_data.create_tf_dataset_for_client(c))
              for c in client_ids]
  return [_sums_to_result(r) for r in computation(weights, datasets)]


def distribution(accuracies: Sequence[float]) -> 'collections.OrderedDict[str, float]':
  """The per-client accuracy distribution (`STATS`), each client weighing the same."""
  a = np.asarray(accuracies, np.float64)
  a = a[np.isfinite(a)]
  if not a.size:
    out = collections.OrderedDict((s, float('nan')) for s in STATS)
    out['num_clients'] = 0
    return out
  return collections.OrderedDict(
      accuracy_mean=float(np.mean(a)), accuracy_var=float(np.var(a)),
      accuracy_p10=float(np.percentile(a, 10)), accuracy_p50=float(np.percentile(a, 50)),
      accuracy_p90=float(np.percentile(a, 90)), accuracy_worst=float(np.min(a)),
      num_clients=int(a.size))


def gain(accuracies: Sequence[float], baseline: Sequence[float]
         ) -> 'collections.OrderedDict[str, float]':
  """`gain_fraction` (clients strictly above their local-only accuracy) and `gain_mean`."""
  diff = np.asarray(accuracies, np.float64) - np.asarray(baseline, np.float64)
  return collections.OrderedDict(gain_fraction=float(np.mean(diff > 0)),
                                 gain_mean=float(np.mean(diff)))


def report_metrics(results: 'collections.OrderedDict[str, list]',
                   baseline: Optional[list] = None) -> 'collections.OrderedDict[str, float]':
  """`fed_eval_<model>_<stat>` for each model's per-client results (and the local baseline)."""
  out = collections.OrderedDict()
  models = collections.OrderedDict(results)
  if baseline is not None:
    models['local'] = baseline
  for name, rows in models.items():
    accuracies = [r['accuracy'] for r in rows]
    for stat, value in distribution(accuracies).items():
      out[f'fed_eval_{name}_{stat}'] = value
    if baseline is not None and name != 'local':
      for stat, value in gain(accuracies, [r['accuracy'] for r in baseline]).items():
        out[f'fed_eval_{name}_{stat}'] = value
  return out


def client_rows(client_ids: Sequence[str], num_train: Sequence[int],
                results: 'collections.OrderedDict[str, list]', baseline: Optional[list] = None
                ) -> list['collections.OrderedDict[str, Any]']:
  """One row per client: its sizes, then `<model>_accuracy`, `<model>_loss` per model (and
  `<model>_gain` over the local baseline)."""
  models = collections.OrderedDict(results)
  if baseline is not None:
    models['local'] = baseline
  rows = []
  for i, cid in enumerate(client_ids):
    row = collections.OrderedDict(client=cid, num_train=int(num_train[i]),
                                  num_test=int(next(iter(models.values()))[i]['num_examples']))
    for name, per_client in models.items():
      row[f'{name}_accuracy'] = per_client[i]['accuracy']
      row[f'{name}_loss'] = per_client[i]['loss']
    if baseline is not None:
      for name in results:
        row[f'{name}_gain'] = results[name][i]['accuracy'] - baseline[i]['accuracy']
    rows.append(row)
  return rows


def write_rows(rows, path: str) -> None:
  """`client_rows` as CSV."""
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)


def plot_clients(rows, path: str, title: str = '') -> None:
  """Each client's accuracy (one marker per model) against its number of training examples."""
  # A Figure of its own, not pyplot: switching the global backend to Agg here would stop a
  # notebook that trains in this process from showing its own plots inline.
  from matplotlib import figure  # pylint: disable=g-import-not-at-top
  fig = figure.Figure(figsize=(6.4, 4.4))
  ax = fig.subplots()
  sizes = [r['num_train'] for r in rows]
  markers = dict(zip(MODELS, 'os^x'))
  for name in MODELS:
    key = f'{name}_accuracy'
    if key in rows[0]:
      ax.scatter(sizes, [r[key] for r in rows], label=name, marker=markers[name], alpha=0.75)
  ax.set_xlabel('client training examples')
  ax.set_ylabel('client test accuracy')
  ax.set_ylim(-0.02, 1.02)
  if max(sizes) > 20 * max(1, min(sizes)):
    ax.set_xscale('log')
  ax.grid(True, alpha=0.3)
  ax.legend()
  ax.set_title(title or 'per-client accuracy')
  fig.tight_layout()
  fig.savefig(path, dpi=110)


class ClientReport:
  """The run's per-client report (see the module docstring): built once, called each evaluation.

  `evaluate(global_weights, runner)` returns the metrics; `to_checkpoint()`/`restore()` carry the
  local baseline; `write_final(exp_dir)` writes `clients.csv` and `client_accuracy.png` from the
  last evaluation.
  """

  def __init__(self, task: task_lib.Task, initial_weights, learning_rate: float, seed: int,
               finetune_epochs: int = 0, local_baseline_epochs: int = 0,
               personalized: bool = False, evaluate_global: Optional[Callable] = None):
    """Builds the report's TFF computations (tracing).

    Args:
      task: The task (its test clients are the evaluation clients).
      initial_weights: The run's initial model (the local baseline starts from it; None
        without one).
      learning_rate: SGD rate of fine-tuning and of the local baseline (the client rate).
      seed: Seeds the local training's shuffling.
      finetune_epochs: k of the fine-tuned model; 0: none.
      local_baseline_epochs: E of the local baseline; 0: none.
      personalized: The algorithm has personalised models (`evaluate` is then given them).
      evaluate_global: `(weights, client_ids) -> evaluate_each(...)'s results` for the global
        model, e.g. the fast path's `tff_lab.evaluation.fused.FusedEvaluation.each`; None:
        `evaluate_each` with a TFF computation built here.
    """
    check_task(task, finetune_epochs, local_baseline_epochs)
    self._task = task
    self._initial = initial_weights
    self._seed = seed
    self._lr = float(learning_rate)
    self.finetune_epochs = int(finetune_epochs)
    self.local_baseline_epochs = int(local_baseline_epochs)
    self.client_ids = list(task.test_data.client_ids)
    self._evaluate_global = evaluate_global
    if evaluate_global is None:
      computation = build_per_client_evaluation(task)
      self._evaluate_global = lambda weights, ids: evaluate_each(task, weights, ids, computation)
    # Every computation is built here: tracing makes TF1 graphs, which invalidate Keras models
    # made earlier (the training loop builds the report before its own Keras model).
    self._eval_own = (build_per_client_evaluation(task, per_client_weights=True)
                      if personalized else None)
    self._local = (build_finetune_evaluation(task, self._lr)
                   if finetune_epochs or local_baseline_epochs else None)
    self.baseline: Optional[list] = None
    self.last_rows: Optional[list] = None
    train_ids = set(task.train_data.client_ids)
    self.num_train = [
        federated_size(task.train_data, c) if c in train_ids else 0 for c in self.client_ids]

  def _baseline(self) -> list:
    if self.baseline is None:
      self.baseline = train_locally(self._task, self._initial, self.client_ids,
                                    self.local_baseline_epochs, self._lr, self._seed,
                                    computation=self._local)
    return self.baseline

  def evaluate(self, global_weights, personal_model_weights: Optional[Callable] = None
               ) -> 'collections.OrderedDict[str, float]':
    """The report's metrics for the current global model.

    Args:
      global_weights: The global model's `ModelWeights`.
      personal_model_weights: `(global_weights, client_id) -> ModelWeights` of the algorithm's
        personalised models, or None.
    """
    results = collections.OrderedDict()
    results['global'] = self._evaluate_global(global_weights, self.client_ids)
    if personal_model_weights is not None:
      if self._eval_own is None:
        raise ValueError('ClientReport was built with personalized=False')
      personal = [personal_model_weights(global_weights, c) for c in self.client_ids]
      results['personal'] = evaluate_each(self._task, personal, self.client_ids, self._eval_own,
                                          per_client_weights=True)
    if self.finetune_epochs:
      results['finetuned'] = train_locally(self._task, global_weights, self.client_ids,
                                           self.finetune_epochs, self._lr, self._seed,
                                           computation=self._local)
    baseline = self._baseline() if self.local_baseline_epochs else None
    self.last_rows = client_rows(self.client_ids, self.num_train, results, baseline)
    return report_metrics(results, baseline)

  def to_checkpoint(self) -> Optional['collections.OrderedDict[str, Any]']:
    """The local baseline as a checkpoint extra part (None before it is computed)."""
    if self.baseline is None:
      return None
    return collections.OrderedDict(
        epochs=self.local_baseline_epochs, client_ids=list(self.client_ids),
        accuracy=np.asarray([r['accuracy'] for r in self.baseline], np.float64),
        loss=np.asarray([r['loss'] for r in self.baseline], np.float64),
        num_examples=np.asarray([r['num_examples'] for r in self.baseline], np.int64))

  def restore(self, saved) -> None:
    """Takes the local baseline from a `to_checkpoint()` value (None: nothing saved)."""
    if not saved:
      return
    if (saved['epochs'] != self.local_baseline_epochs
        or list(saved['client_ids']) != self.client_ids):
      return  # another setting: recompute
    self.baseline = [collections.OrderedDict(accuracy=float(a), loss=float(l), num_examples=int(n))
                     for a, l, n in zip(saved['accuracy'], saved['loss'], saved['num_examples'])]

  def write_final(self, exp_dir: str, title: str = '') -> list[str]:
    """`clients.csv` and `client_accuracy.png` of the last evaluation; the files written."""
    if not self.last_rows:
      return []
    write_rows(self.last_rows, os.path.join(exp_dir, CSV_NAME))
    plot_clients(self.last_rows, os.path.join(exp_dir, PNG_NAME), title)
    return [CSV_NAME, PNG_NAME]


def federated_size(data, client_id: str) -> int:
  """A client's number of examples (counted when its dataset does not know it)."""
  dataset = data.create_tf_dataset_for_client(client_id)
  n = int(dataset.cardinality())
  return n if n >= 0 else int(dataset.reduce(0, lambda count, _: count + 1))
