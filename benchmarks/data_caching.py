r"""What caching the per-client preprocessing saves: Shakespeare round time with and without.

`shakespeare_plays` tokenises every role's text into 80-character windows once, when the task is
built (the cached path, the default). With `--shakespeare_plays_tokenize_each_round` the roles
stay strings and are tokenised in tf.data every time a client is sampled, as TFF's Shakespeare
baseline does. Both give the same examples (tests/tasks/test_shakespeare_plays.py).

For each path this prints, from one run: the median time of a FedAvg round through TFF
(`--clients_per_round` roles, batch 4, 1 epoch, the 2xLSTM(256) model), and the time to build and
read the round's client datasets alone (the preprocessing share).

  .venv/bin/python benchmarks/data_caching.py
"""

import statistics
import time

from absl import app
from absl import flags
from absl import logging

import tff_lab  # pylint: disable=g-bad-import-order,unused-import

from tff_lab import algorithms  # pylint: disable=g-import-not-at-top
from tff_lab import runtime  # pylint: disable=g-import-not-at-top
from tff_lab import tasks  # pylint: disable=g-import-not-at-top
from tff_lab.training import loop  # pylint: disable=g-import-not-at-top

_CLIENTS = flags.DEFINE_integer('clients_per_round', 10, 'Roles per round.')
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Timed rounds (after one warm-up round).')
_MAX_CHARS = flags.DEFINE_integer('max_chars_per_client', 4000, 'Text per role (0: all).')


def _datasets(task, ids, r):
  return [task.preprocess_train(task.train_data.create_tf_dataset_for_client(c),
                                seed=loop.client_shuffle_seed(0, r, i)) for i, c in enumerate(ids)]


def measure(tokenize_each_round: bool):
  task = tasks.create_task('shakespeare_plays', {
      'max_chars_per_client': _MAX_CHARS.value, 'tokenize_each_round': tokenize_each_round})
  runtime.set_local_context()
  process = algorithms.build_fedavg(task, algorithms.create_optimizer('sgd', 1.0))
  state = process.initialize()
  ids = task.train_data.client_ids
  rounds, data_only = [], []
  for r in range(_ROUNDS.value + 1):
    sampled = loop.sample_clients(ids, _CLIENTS.value, 0, r)
    t0 = time.perf_counter()
    for ds in _datasets(task, sampled, r):
      for _ in ds:
        pass
    t1 = time.perf_counter()
    state = process.next(state, _datasets(task, sampled, r)).state
    if r:
      data_only.append(t1 - t0)
      rounds.append(time.perf_counter() - t1)
  return statistics.median(rounds), statistics.median(data_only)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  try:
    cached = measure(False)
    uncached = measure(True)
  finally:
    runtime.stop_all_workers()
  print(f'shakespeare_plays, {_CLIENTS.value} roles/round, <= {_MAX_CHARS.value} chars/role, '
        f'median of {_ROUNDS.value} rounds')
  print(f'{"path":<34s} {"round (s)":>10s} {"datasets only (s)":>18s}')
  print(f'{"tokenised once (cached, default)":<34s} {cached[0]:>10.3f} {cached[1]:>18.3f}')
  print(f'{"tokenised every round (uncached)":<34s} {uncached[0]:>10.3f} {uncached[1]:>18.3f}')
  print(f'uncached/cached: round {uncached[0] / cached[0]:.2f}x, '
        f'datasets {uncached[1] / cached[1]:.2f}x')


if __name__ == '__main__':
  app.run(main)
