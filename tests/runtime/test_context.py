"""The managed local context: computations run on a managed worker, which is replaced if it dies."""

import os
import signal
import time

import numpy as np
import tensorflow_federated as tff

from tff_lab import runtime


@tff.tensorflow.computation(tff.TensorType(np.float32))
def _add_one(x):
  return x + 1.0


@tff.federated_computation(tff.FederatedType(tff.TensorType(np.float32), tff.CLIENTS))
def _sum_plus_one(values):
  return tff.federated_sum(tff.federated_map(_add_one, values))


def test_runs_on_a_managed_worker_with_concurrency_knob():
  runtime.set_local_context(max_concurrent_clients=2)
  try:
    assert _sum_plus_one([1.0, 2.0, 3.0]) == 9.0
    worker = runtime.current_worker()
    assert worker.alive()
    with open(f'/proc/{worker.pid}/cmdline', 'rb') as f:
      assert b'--max_concurrent_computation_calls=2' in f.read()
  finally:
    runtime.set_local_context()


def test_replacing_the_context_stops_the_old_worker():
  assert _sum_plus_one([1.0]) == 2.0
  old = runtime.current_worker()
  runtime.set_local_context()
  assert not old.alive()
  assert _sum_plus_one([1.0]) == 2.0
  assert runtime.current_worker().pid != old.pid


def test_a_killed_worker_is_replaced():
  assert _sum_plus_one([1.0, 1.0]) == 4.0
  old = runtime.current_worker()
  os.kill(old.pid, signal.SIGKILL)
  time.sleep(0.3)
  assert _sum_plus_one([1.0, 1.0]) == 4.0
  new = runtime.current_worker()
  assert new.pid != old.pid and new.alive() and not old.alive()
