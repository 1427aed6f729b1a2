r"""Throughput of one federated training round: tff_lab FedAvg vs vanilla TFF vs plain Keras.

Workload W1 (McMahan et al. 2017's MNIST 2NN setting, on synthetic data so no download is needed):
the 2NN (784-200-200-10, `tff_lab.models.build_2nn`), `--clients` clients x
`--examples_per_client` random MNIST-shaped examples (x float32 in [0, 1) of shape 784, integer
labels 0..9, seeded with NumPy), batch `--batch_size`, 1 local epoch, client SGD with learning
rate 0.1, server SGD with learning rate 1.0, every client in every round.

Rows, all measured in this one process, their rounds interleaved (round k of every row, then
round k+1 of every row, ...; the two TFF-runtime rows on the same tff_lab managed TFF worker):

  0. tff_lab fused: the `fused` backend (`--simulation=fused`, the library's fast path,
     `tff_lab.algorithms.vectorized.VectorizedRounds`) on the same plans as row 1 (the round
     planner's, `tff_lab.simulation.plan`): every client's local SGD in one TF program, one
     client after another; the batches are packed by example index (`tff_lab.data.packing`). A
     round is timed from the plan (client ids and shuffle seeds) to the new state, packing
     included.
  0b. tff_lab vectorized: the same with `--simulation=vectorized` (batched over clients with
     `tf.vectorized_map`).

  1. tff_lab FedAvg: the `tff` backend (`tff_lab.simulation.backends.ProcessRunner`) around
     `tff_lab.algorithms.build_fedavg` on a `tff_lab.tasks.Task`: each round's plan becomes
     `task.preprocess_train(...)` datasets, as in the training loop (the task's ClientSpec
     shuffles with a buffer of `--examples_per_client`, as the vanilla row does).
  2. vanilla TFF: `tff.learning.algorithms.build_weighted_fed_avg` over a plain
     `tff.learning.models.from_keras_model`, fed `ds.shuffle(100).batch(20)` per client as in TFF's
     tutorials.
  3. centralised Keras: the same examples pooled, one epoch of SGD(0.1) at the same batch size in
     a single `tf.function` looping over a `tf.data` dataset.

For the federated rows a round is timed from building the clients' datasets to `process.next`
returning; `--warmup_rounds` rounds (including TFF tracing/compilation) are run first and not
timed, then `--rounds` rounds are timed. For the centralised row a round is one epoch (its warm-up
rounds include tracing). examples/s = examples per round / median round time.
Each row's individual timed rounds are printed too: on a shared machine their spread tells how far
the ratios can be trusted.

Beside each row: its achieved FLOP/s (examples/s x 3x the forward FLOPs from the layer shapes,
`forward_flops`) and the peak, the median `--peak_size` float32 matmul (`matmul_peak`) measured
after the timed rounds (benchmarks/workloads.py says how).

The script prints a table, then one JSON line (`{"workload": "W1", ...}`) for tooling.

Run (from the repository root; the defaults are W1):

  .venv/bin/python benchmarks/round_throughput.py
  .venv/bin/python benchmarks/round_throughput.py --rounds=2 --clients=10 --examples_per_client=40

Heavy: it uses every core TensorFlow and the TFF worker are given; run nothing else heavy
alongside it. Every worker_binary it starts is stopped before it exits.
"""

import collections
import functools
import json
import statistics
import time
import types

from absl import app
from absl import flags
from absl import logging
import numpy as np

import tff_lab  # pylint: disable=g-bad-import-order  # first: installs the managed TFF runtime

import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-order
import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top,wrong-import-order

from tff_lab import algorithms  # pylint: disable=g-import-not-at-top
from tff_lab import models  # pylint: disable=g-import-not-at-top
from tff_lab import runtime  # pylint: disable=g-import-not-at-top
from tff_lab.algorithms import vectorized  # pylint: disable=g-import-not-at-top
from tff_lab.data import client_data  # pylint: disable=g-import-not-at-top
from tff_lab.simulation import backends  # pylint: disable=g-import-not-at-top
from tff_lab.simulation import plan as plan_lib  # pylint: disable=g-import-not-at-top
from tff_lab.tasks import task as task_lib  # pylint: disable=g-import-not-at-top

_ROUNDS = flags.DEFINE_integer('rounds', 5, 'Timed rounds (epochs for the centralised row).')
_WARMUP_ROUNDS = flags.DEFINE_integer('warmup_rounds', 1,
                                      'Untimed rounds first (they include TFF tracing).')
_CLIENTS = flags.DEFINE_integer('clients', 100, 'Clients, all of them trained every round.')
_EXAMPLES_PER_CLIENT = flags.DEFINE_integer('examples_per_client', 100, 'Examples per client.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 20, 'Client (and centralised) batch size.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the synthetic data and of client sampling.')
_PEAK_SIZE = flags.DEFINE_integer('peak_size', 2048, 'Side of the peak-measuring matmul.')
_PEAK_REPEATS = flags.DEFINE_integer('peak_repeats', 7, 'Timed matmuls for the peak (median).')

WORKLOAD = 'W1'
INPUT_DIM = 784
NUM_CLASSES = 10
CLIENT_LR = 0.1
SERVER_LR = 1.0


def forward_flops(model: tf.keras.Model) -> int:
  """Forward FLOPs of one example through `model`, from its layer shapes (workloads.py)."""
  total = 0
  for layer in model.layers:
    if isinstance(layer, tf.keras.layers.Dense):
      in_dim = int(layer.input.shape[-1])
      positions = int(np.prod(layer.input.shape[1:-1] or [1]))
      total += 2 * in_dim * layer.units * positions
    elif isinstance(layer, tf.keras.layers.Conv2D):
      kh, kw = layer.kernel_size
      cin = int(layer.input.shape[-1])
      _, h, w, cout = layer.output.shape
      total += 2 * kh * kw * cin * int(cout) * int(h) * int(w)
    elif isinstance(layer, tf.keras.layers.LSTM):
      steps, in_dim = int(layer.input.shape[1]), int(layer.input.shape[-1])
      total += steps * 8 * layer.units * (in_dim + layer.units)
  return total


def matmul_peak(size: int, repeats: int) -> float:
  """FLOP/s of a `size` x `size` float32 matmul: the median of `repeats` timed runs."""
  a = tf.random.stateless_uniform([size, size], seed=[1, 2])
  b = tf.random.stateless_uniform([size, size], seed=[3, 4])
  tf.matmul(a, b).numpy()  # warm-up
  seconds = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    tf.matmul(a, b).numpy()
    seconds.append(time.perf_counter() - t0)
  return 2 * size ** 3 / statistics.median(seconds)


def make_client_arrays(num_clients: int, examples_per_client: int, seed: int
                       ) -> 'collections.OrderedDict[str, tuple[np.ndarray, np.ndarray]]':
  """Synthetic MNIST-shaped data: x ~ U[0, 1)^784 float32, y uniform in 0..9 (int32)."""
  rng = np.random.default_rng(seed)
  out = collections.OrderedDict()
  for cid in client_data.client_ids_for(num_clients):
    x = rng.random((examples_per_client, INPUT_DIM), dtype=np.float32)
    y = rng.integers(0, NUM_CLASSES, size=examples_per_client).astype(np.int32)
    out[cid] = (x, y)
  return out


def make_task(arrays, batch_size: int, shuffle_buffer: int) -> task_lib.Task:
  data = client_data.from_arrays(arrays)
  return task_lib.Task(
      name='w1_synthetic_mnist', train_data=data, test_data=data,
      centralized_test_data=client_data.pool(arrays),
      model_fn=functools.partial(models.build_2nn, (INPUT_DIM,), NUM_CLASSES),
      loss_fn=tf.keras.losses.SparseCategoricalCrossentropy,
      prediction_kind='sparse_categorical',
      train_spec=task_lib.ClientSpec(num_epochs=1, batch_size=batch_size,
                                     shuffle_buffer_size=shuffle_buffer),
      description='W1: 2NN on synthetic MNIST-shaped data')


def _num_examples(process_metrics) -> int:
  return int(process_metrics['client_work']['train']['num_examples'])


def time_interleaved(rows, warmup: int, rounds: int, expected_examples: int
                     ) -> 'collections.OrderedDict[str, list[float]]':
  """Times the federated rows round by round, alternating between them on one worker.

  Alternating (round 1 of every row, then round 2 of every row, ...) exposes every row to the
  same machine state, so drift in background load or the worker's warm-up does not favour the
  row measured first.

  Args:
    rows: Maps a row name to `(process, make_inputs)`: `make_inputs(round_num)` is the round's
      datasets (vanilla), plan (tff_lab) or pooled dataset (centralised).
    warmup: Untimed rounds per row first (they include TFF tracing).
    rounds: Timed rounds per row.
    expected_examples: Examples each round must train on (a sanity check).

  Returns:
    Each row's timed round durations in seconds.
  """
  states = {name: process.initialize() for name, (process, _) in rows.items()}
  seconds = collections.OrderedDict((name, []) for name in rows)
  for round_num in range(1, warmup + rounds + 1):
    for name, (process, make_inputs) in rows.items():
      t0 = time.perf_counter()
      output = process.next(states[name], make_inputs(round_num))
      elapsed = time.perf_counter() - t0
      states[name] = output.state
      got = _num_examples(output.metrics)
      if got != expected_examples:
        raise RuntimeError(f'{name}, round {round_num}: trained on {got} examples, expected '
                           f'{expected_examples}')
      if round_num > warmup:
        seconds[name].append(elapsed)
  return seconds


def bench_tff_lab(task: task_lib.Task, seed: int):
  """Row 1: the library's `tff` backend on the round planner's plans, as the training loop runs
  it (`tff_lab.simulation`): datasets built from each plan, then TFF's `process.next`."""
  process = algorithms.build_fedavg(
      task, client_optimizer=algorithms.create_optimizer('sgd', CLIENT_LR),
      server_optimizer=algorithms.create_optimizer('sgd', SERVER_LR))
  runner = backends.ProcessRunner(process, task)
  return (types.SimpleNamespace(initialize=process.initialize, next=runner.next),
          make_plans(task, seed))


def make_plans(task: task_lib.Task, seed: int):
  """Every row of the library's plans: every client each round, as the loop plans a round."""
  return plan_lib.RoundPlanner(task, len(task.train_data.client_ids), seed=seed).plan


def bench_vanilla_tff(train_data, batch_size: int, model_fn=None, loss_fn=None, plans=None,
                      num_epochs: int = 1):
  """Row 2: TFF's tutorial recipe, on the same managed runtime.

  `model_fn` and `loss_fn` default to W1's 2NN and sparse cross-entropy; with `plans` (a
  `RoundPlanner.plan`) each round trains that plan's clients, else every client.
  """
  client_ids = list(train_data.client_ids)
  model_fn_ = model_fn or functools.partial(models.build_2nn, (INPUT_DIM,), NUM_CLASSES)
  loss_fn_ = loss_fn or tf.keras.losses.SparseCategoricalCrossentropy

  def preprocess(dataset):
    return dataset.shuffle(100).repeat(num_epochs).batch(batch_size)

  input_spec = preprocess(train_data.create_tf_dataset_for_client(client_ids[0])).element_spec

  def model_fn():
    return tff.learning.models.from_keras_model(
        model_fn_(),
        loss=loss_fn_(),
        input_spec=input_spec,
        metrics=[tf.keras.metrics.SparseCategoricalAccuracy()])

  process = tff.learning.algorithms.build_weighted_fed_avg(
      model_fn,
      client_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=CLIENT_LR),
      server_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=SERVER_LR))

  def make_datasets(round_num):
    ids = client_ids if plans is None else plans(round_num).client_ids
    return [preprocess(train_data.create_tf_dataset_for_client(c)) for c in ids]

  return process, make_datasets


def bench_centralized(arrays, batch_size: int, seed: int, model_fn=None, loss_fn=None,
                      num_epochs: int = 1, learning_rate: float = CLIENT_LR):
  """Row 3: `num_epochs` epochs over the pooled examples per round, in one tf.function.

  `model_fn` and `loss_fn` default to W1's 2NN and sparse cross-entropy.
  """
  x, y = client_data.pool(arrays)
  tf.keras.utils.set_random_seed(seed)
  model = (model_fn or functools.partial(models.build_2nn, (INPUT_DIM,), NUM_CLASSES))()
  optimizer = tf.keras.optimizers.SGD(learning_rate=learning_rate)
  loss_fn = (loss_fn or tf.keras.losses.SparseCategoricalCrossentropy)()
  dataset = (tf.data.Dataset.from_tensor_slices((x, y))
             .shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
             .repeat(num_epochs).batch(batch_size))

  @tf.function
  def train_epoch(ds):
    loss = tf.constant(0.0)
    for xb, yb in ds:
      with tf.GradientTape() as tape:
        loss = loss_fn(yb, model(xb, training=True))
      grads = tape.gradient(loss, model.trainable_variables)
      optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss

  def next_fn(unused_state, ds):
    train_epoch(ds).numpy()  # the first call traces and builds the optimizer (a warm-up round)
    return types.SimpleNamespace(state=None, metrics={'client_work': {'train': {
        'num_examples': len(y) * num_epochs}}})

  return types.SimpleNamespace(initialize=lambda: None, next=next_fn), lambda unused: dataset


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if min(_ROUNDS.value, _CLIENTS.value, _EXAMPLES_PER_CLIENT.value, _BATCH_SIZE.value) < 1:
    raise app.UsageError('--rounds, --clients, --examples_per_client and --batch_size must be >= 1')
  if _WARMUP_ROUNDS.value < 1:
    raise app.UsageError('--warmup_rounds must be >= 1 (the first round includes tracing)')
  logging.set_verbosity(logging.WARNING)  # TFF logs INFO lines while tracing each model

  arrays = make_client_arrays(_CLIENTS.value, _EXAMPLES_PER_CLIENT.value, _SEED.value)
  task = make_task(arrays, _BATCH_SIZE.value, shuffle_buffer=_EXAMPLES_PER_CLIENT.value)
  examples = _CLIENTS.value * _EXAMPLES_PER_CLIENT.value
  print(f'workload {WORKLOAD}: 2NN {INPUT_DIM}-200-200-{NUM_CLASSES}, {_CLIENTS.value} clients x '
        f'{_EXAMPLES_PER_CLIENT.value} examples, batch {_BATCH_SIZE.value}, 1 epoch, client '
        f'SGD {CLIENT_LR}, all clients per round; {_WARMUP_ROUNDS.value} warm-up + '
        f'{_ROUNDS.value} timed rounds', flush=True)

  try:
    runtime.set_local_context()
    tff_lab_row = bench_tff_lab(task, _SEED.value)
    # The in-graph paths train the same clients on the same batches with the same mathematics
    # (tests/algorithms/test_vectorized.py).
    in_graph_rows = collections.OrderedDict()
    for name, client_loop in (('tff_lab fused', 'sequential'),
                              ('tff_lab vectorized', 'vectorized_map')):
      runner = backends.InGraphRunner(vectorized.VectorizedRounds(
          task, CLIENT_LR, algorithms.create_optimizer('sgd', SERVER_LR),
          client_loop=client_loop))
      in_graph_rows[name] = (types.SimpleNamespace(initialize=tff_lab_row[0].initialize,
                                                   next=runner.next), make_plans(task, _SEED.value))
    # Every row's round k runs before any row's round k+1, so load drift is shared by all rows.
    rows = in_graph_rows
    rows['tff_lab FedAvg'] = tff_lab_row
    rows['vanilla TFF'] = bench_vanilla_tff(task.train_data, _BATCH_SIZE.value)
    rows['centralised Keras'] = bench_centralized(arrays, _BATCH_SIZE.value, _SEED.value)
    timings = time_interleaved(rows, _WARMUP_ROUNDS.value, _ROUNDS.value, examples)
    peak = matmul_peak(_PEAK_SIZE.value, _PEAK_REPEATS.value)
  finally:
    runtime.stop_all_workers()

  median = {name: statistics.median(s) for name, s in timings.items()}
  rate = {name: examples / m for name, m in median.items()}
  vanilla, central = rate['vanilla TFF'], rate['centralised Keras']

  print()
  for name, seconds in timings.items():
    print(f'{name:<20s} timed rounds (s): ' + ' '.join(f'{t:.3f}' for t in seconds))
  header = (f'{"name":<20s} {"median s/round":>15s} {"examples/s":>12s} {"vs vanilla TFF":>15s} '
            f'{"vs centralised":>15s} {"GFLOP/s":>10s} {"peak GFLOP/s":>13s} {"of peak":>8s}')
  train_flops = 3 * forward_flops(models.build_2nn((INPUT_DIM,), NUM_CLASSES))
  print()
  print(header)
  print('-' * len(header))
  for name in timings:
    print(f'{name:<20s} {median[name]:>15.3f} {rate[name]:>12.0f} {rate[name] / vanilla:>14.2f}x '
          f'{rate[name] / central:>14.3f}x {rate[name] * train_flops / 1e9:>10.3f} '
          f'{peak / 1e9:>13.1f} {rate[name] * train_flops / peak:>7.2%}')
  print()
  best = 'tff_lab fused'
  print(json.dumps({
      'workload': WORKLOAD,
      'tff_lab_path': best,
      'ratio_vs_vanilla_tff': round(rate[best] / vanilla, 4),
      'ratio_vs_centralized': round(rate[best] / central, 4),
      'ratio_vs_vanilla_tff_tff_path': round(rate['tff_lab FedAvg'] / vanilla, 4),
      'examples_per_second': {
          'tff_lab_fused': round(rate['tff_lab fused'], 1),
          'tff_lab_vectorized': round(rate['tff_lab vectorized'], 1),
          'tff_lab_fedavg': round(rate['tff_lab FedAvg'], 1),
          'vanilla_tff': round(vanilla, 1),
          'centralized_keras': round(central, 1),
      },
      'train_flops_per_example': train_flops,
      'peak_flops_per_second': round(peak, 1),
      'flops_per_second_fused': round(rate[best] * train_flops, 1),
  }))


if __name__ == '__main__':
  app.run(main)
