r"""Where the time of a federated round goes, measured (W1: 2NN, 100 clients x 100 examples).

Splits a round of the TFF path into:
  * tracing/compilation: the first `process.next` minus a steady-state round;
  * building the clients' tf.data datasets in Python;
  * per-client overhead (serialising each client's dataset into the call, dispatch, aggregation):
    a round whose clients hold 1 example each, i.e. almost no client work;
  * client work: the full round minus that overhead;
and the in-graph paths (`--simulation=fused` and `vectorized`) into packing the batches (from
finished tf.data datasets, as before, and by example index, as the training loop now does) and
running the one TF program plus the server step.

Run from the repository root (heavy: run nothing else alongside):

  .venv/bin/python benchmarks/round_profile.py
"""

import statistics
import sys
import time

from absl import app
from absl import flags
from absl import logging

import tff_lab  # pylint: disable=g-bad-import-order,unused-import

from tff_lab import algorithms  # pylint: disable=g-import-not-at-top
from tff_lab import runtime  # pylint: disable=g-import-not-at-top
from tff_lab import faults  # pylint: disable=g-import-not-at-top
from tff_lab.algorithms import vectorized  # pylint: disable=g-import-not-at-top
from tff_lab.data import packing  # pylint: disable=g-import-not-at-top

sys.path.insert(0, 'benchmarks')
import scaling_memory  # pylint: disable=g-import-not-at-top,wrong-import-position

_CLIENTS = flags.DEFINE_integer('profile_clients', 100, 'Clients per round.')
_ROUNDS = flags.DEFINE_integer('profile_rounds', 3, 'Timed rounds.')


def _datasets(task, r):
  return faults.materialize_client_inputs(task, _plans(task, r), num_classes=10)


_plans = scaling_memory.all_client_plans


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  n = _CLIENTS.value
  rows = []
  in_graph = {}
  try:
    for examples in (100, 1):
      task = scaling_memory.make_task(n, examples)
      runtime.set_local_context()
      process = algorithms.build_fedavg(task, algorithms.create_optimizer('sgd', 0.1))
      state = process.initialize()
      t0 = time.perf_counter()
      state = process.next(state, _datasets(task, 0)).state
      first = time.perf_counter() - t0
      build, nxt = [], []
      for r in range(1, _ROUNDS.value + 1):
        t0 = time.perf_counter()
        data = _datasets(task, r)
        t1 = time.perf_counter()
        state = process.next(state, data).state
        build.append(t1 - t0)
        nxt.append(time.perf_counter() - t1)
      rows.append((examples, first, statistics.median(build), statistics.median(nxt)))
      if examples == 100:
        for path in ('fused', 'vectorized'):
          runner = vectorized.VectorizedRounds(task, 0.1, algorithms.create_optimizer('sgd', 1.0),
                                               client_loop=vectorized.SIMULATION_CLIENT_LOOPS[path])
          runner.next(state, _plans(task, 0))
          times = {'datasets': [], 'by_index': [], 'program': []}
          for r in range(1, _ROUNDS.value + 1):
            t0 = time.perf_counter()
            packing.pack_client_datasets(_datasets(task, r))
            t1 = time.perf_counter()
            runner.pack(_plans(task, r))
            t2 = time.perf_counter()
            runner.next(state, _plans(task, r))
            t3 = time.perf_counter()
            times['datasets'].append(t1 - t0)
            times['by_index'].append(t2 - t1)
            times['program'].append(t3 - t2 - (t2 - t1))  # next() packs again; subtract it
          in_graph[path] = {k: statistics.median(v) for k, v in times.items()}
          runner.close()
  finally:
    runtime.stop_all_workers()
  (_, first, build, full), (_, _, _, overhead) = rows
  print(f'TFF path, {n} clients x 100 examples (median of {_ROUNDS.value} rounds):')
  print(f'  tracing + first-call compilation      {first - full:8.3f} s (once per process)')
  print(f'  building client datasets (Python)     {build:8.3f} s')
  print(f'  process.next                          {full:8.3f} s')
  print(f'    per-client overhead (1-example run) {overhead:8.3f} s ({overhead / n * 1e3:.1f} ms/client)')
  print(f'    client work + aggregation (rest)    {full - overhead:8.3f} s')
  for path, t in in_graph.items():
    print(f'--simulation={path}:')
    print(f'  datasets built + packed (old path)    {t["datasets"]:8.3f} s')
    print(f'  packing batches by index              {t["by_index"]:8.3f} s')
    print(f'  TF program (all clients) + server step {t["program"]:7.3f} s')


if __name__ == '__main__':
  app.run(main)
