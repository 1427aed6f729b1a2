r"""Round time against clients per round, and memory over a long run.

Two measurements from one run (a script, not a test):

1. Scaling: median round time at 10, 100 and 1,000 clients per round (`--sizes`), for the TFF
   path, the fused path (`--simulation=fused`) and the vectorised path
   (`--simulation=vectorized`), on the 2NN with
   `--examples_per_client` random MNIST-shaped examples per client, batch 20, 1 epoch. Prints the
   time per client relative to the smallest size: growth no faster than linear means the ratio
   stays at or below ~1.
2. Memory: resident memory (this process plus its TFF worker_binary) after round `--first_mark`
   (default 20) and after round `--long_rounds` (default 300) of one run of tff_lab's training
   loop on a small workload (digits, 2NN, 10 clients per round, evaluation and checkpoints every
   10 rounds), and the growth between them, for each of `--memory_simulations`.

Run from the repository root:

  .venv/bin/python benchmarks/scaling_memory.py
  .venv/bin/python benchmarks/scaling_memory.py --sizes=10,100 --long_rounds=60   # quicker

Heavy: run nothing else alongside it.
"""

import math
import statistics
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np
import psutil

import tff_lab  # pylint: disable=g-bad-import-order  # first: installs the managed TFF runtime

from tff_lab import algorithms  # pylint: disable=g-import-not-at-top
from tff_lab import faults  # pylint: disable=g-import-not-at-top
from tff_lab import models  # pylint: disable=g-import-not-at-top
from tff_lab import runtime  # pylint: disable=g-import-not-at-top
from tff_lab.algorithms import vectorized  # pylint: disable=g-import-not-at-top
from tff_lab.data import client_data  # pylint: disable=g-import-not-at-top
from tff_lab.tasks import task as task_lib  # pylint: disable=g-import-not-at-top
from tff_lab.simulation import plan as plan_lib  # pylint: disable=g-import-not-at-top
from tff_lab.training import config as config_lib  # pylint: disable=g-import-not-at-top
from tff_lab.training import loop  # pylint: disable=g-import-not-at-top

import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-order

_SIZES = flags.DEFINE_list('sizes', ['10', '100', '1000'], 'Clients per round to time.')
_EXAMPLES = flags.DEFINE_integer('examples_per_client', 100, 'Examples per client.')
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Timed rounds per size (after 1 warm-up round).')
_LONG_ROUNDS = flags.DEFINE_integer('long_rounds', 300, 'Rounds of the memory run.')
_FIRST_MARK = flags.DEFINE_integer('first_mark', 20, 'The memory run\'s first measured round.')
_PATHS = flags.DEFINE_list('paths', ['tff', 'fused', 'vectorized'], 'Paths the scaling part times.')
_MEMORY_SIMULATIONS = flags.DEFINE_list('memory_simulations', ['tff', 'fused'],
                                        '--simulation values of the memory runs.')


def make_task(num_clients: int, examples: int) -> task_lib.Task:
  rng = np.random.default_rng(0)
  arrays = {cid: (rng.random((examples, 784), dtype=np.float32),
                  rng.integers(0, 10, examples).astype(np.int32))
            for cid in client_data.client_ids_for(num_clients)}
  data = client_data.from_arrays(arrays)
  return task_lib.Task(
      name='w1', train_data=data, test_data=data, centralized_test_data=next(iter(arrays.values())),
      model_fn=lambda: models.build_2nn((784,), 10),
      loss_fn=tf.keras.losses.SparseCategoricalCrossentropy, prediction_kind='sparse_categorical',
      train_spec=task_lib.ClientSpec(num_epochs=1, batch_size=20, shuffle_buffer_size=examples))


def all_client_plans(task: task_lib.Task, round_num: int) -> list:
  """Every client of `task` in round `round_num`, planned as the training loop plans it (seed 0)."""
  planner = plan_lib.RoundPlanner(task, len(task.train_data.client_ids), seed=0)
  return list(planner.plan(round_num).clients)


def time_rounds(runner, state, task, rounds: int, in_graph: bool) -> list[float]:
  """Round times, from the clients' plans to the new state (datasets built for the TFF path)."""
  seconds = []
  for r in range(rounds + 1):
    t0 = time.perf_counter()
    plans = all_client_plans(task, r)
    inputs = plans if in_graph else faults.materialize_client_inputs(task, plans, 10)
    state = runner.next(state, inputs).state
    if r:  # round 0 is the warm-up (tracing)
      seconds.append(time.perf_counter() - t0)
  return seconds


def rss_mb() -> float:
  me = psutil.Process()
  procs = [me] + me.children(recursive=True)
  return sum(p.memory_info().rss for p in procs if p.is_running()) / 2**20


def scaling(sizes: list[int]) -> None:
  print('clients/round  path        median s/round  s per client  per-client vs smallest')
  base = {}
  for n in sizes:
    task = make_task(n, _EXAMPLES.value)
    runtime.set_local_context()
    process = algorithms.build_fedavg(task, algorithms.create_optimizer('sgd', 0.1))
    for path in _PATHS.value:
      if path == 'tff':
        impl = process
      else:
        impl = vectorized.VectorizedRounds(task, 0.1, algorithms.create_optimizer('sgd', 1.0),
                                           client_loop=vectorized.SIMULATION_CLIENT_LOOPS[path])
      median = statistics.median(time_rounds(impl, process.initialize(), task, _ROUNDS.value,
                                             in_graph=path != 'tff'))
      if impl is not process:
        impl.close()
      per_client = median / n
      base.setdefault(path, per_client)
      print(f'{n:>13d}  {path:<10s}  {median:>14.3f}  {per_client:>12.5f}  '
            f'{per_client / base[path]:>22.2f}', flush=True)


def memory(first: int, rounds: int, simulation: str) -> None:
  """Prints resident memory after round `first` and after round `rounds` of one run."""
  if not 0 < first < rounds:
    raise SystemExit(f'need 0 < --first_mark < --long_rounds, got {first} and {rounds}')
  marks = {first: None, rounds: None}
  with tempfile.TemporaryDirectory() as root:
    config = config_lib.ExperimentConfig(
        task='digits', task_options={'model': 'mlp'}, rounds=rounds, clients_per_round=10,
        eval_every=10, checkpoint_every=math.gcd(10, first, rounds), root_output_dir=root,
        experiment_name='mem', progress=False, simulation=simulation)
    original = loop.checkpoint.save_checkpoint

    def save_and_measure(directory, round_num, state, **kwargs):
      if round_num in marks:
        marks[round_num] = rss_mb()
      return original(directory, round_num, state, **kwargs)

    loop.checkpoint.save_checkpoint = save_and_measure  # measure right after both marks
    try:
      loop.run_experiment(config)
    finally:
      loop.checkpoint.save_checkpoint = original
  growth = (marks[rounds] - marks[first]) / marks[first]
  print(f'--simulation={simulation}: resident memory (python + worker): round {first} '
        f'{marks[first]:.0f} MB, round {rounds} '
        f'{marks[rounds]:.0f} MB, growth {100 * growth:+.1f}%')


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  try:
    scaling([int(s) for s in _SIZES.value])
    for simulation in _MEMORY_SIMULATIONS.value:
      memory(_FIRST_MARK.value, _LONG_ROUNDS.value, simulation)
  finally:
    runtime.stop_all_workers()


if __name__ == '__main__':
  app.run(main)
