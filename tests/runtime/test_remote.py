"""Multi-worker execution over remote TFF workers, the `tff-lab-worker` launcher and its bind shim.

Workers are real `worker_binary` processes on loopback ports. Every test restores the managed
local context and stops the workers it started.
"""

import os
import select
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import portpicker
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_lab import algorithms
from tff_lab import runtime
from tff_lab import tasks
from tff_lab.evaluation import federated
from tff_lab.runtime import bind_shim
from tff_lab.runtime import remote
from tff_lab.runtime import worker_cli
from tff_lab.runtime import workers
from tff_lab.simulation import backends
from tff_lab.simulation import plan as plan_lib
from tff_lab.training import loop

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEED = 3


def _alive(pid: int) -> bool:
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().split(')')[-1].split()[0] != 'Z'
  except FileNotFoundError:
    return False


def _wait_gone(pid: int, timeout: float = 15.0) -> bool:
  deadline = time.monotonic() + timeout
  while _alive(pid) and time.monotonic() < deadline:
    time.sleep(0.05)
  return not _alive(pid)


@pytest.fixture
def two_workers():
  started = [workers.ManagedWorker() for _ in range(2)]
  try:
    yield started
  finally:
    runtime.set_local_context()
    for worker in started:
      worker.stop()


@pytest.fixture(scope='module')
def fedavg():
  task = tasks.create_task('digits', {'model': 'mlp', 'num_clients': 12})
  process = algorithms.create_learning_process(
      'fedavg', task, algorithms.create_optimizer('sgd', 0.05),
      algorithms.create_optimizer('sgdm', 1.0, momentum=0.5))
  return task, process


def _train(task, process, rounds: int, clients_per_round: int = 6):
  """The training loop's own recipe: the round planner's plans on the `tff` backend."""
  tf.random.set_seed(SEED)
  state = process.set_model_weights(process.initialize(),
                                    plan_lib.initial_model_weights(task, SEED))
  history = []
  planner = plan_lib.RoundPlanner(task, clients_per_round, seed=SEED)
  runner = backends.ProcessRunner(process, task)
  for round_num in range(1, rounds + 1):
    output = runner.next(state, planner.plan(round_num))
    state = output.state
    history.append(loop.round_metrics(output.metrics))
  return process.get_model_weights(state), history


def test_remote_run_matches_local_run(two_workers, fedavg):
  task, process = fedavg
  fed_eval = federated.build_federated_evaluation(task)
  runtime.set_local_context()
  local_weights, local_history = _train(task, process, rounds=3)
  local_eval = federated.evaluate_federated(task, local_weights, fed_eval)

  remote.set_remote_context([f'localhost:{w.port}' for w in two_workers])
  remote_weights, remote_history = _train(task, process, rounds=3)
  remote_eval = federated.evaluate_federated(task, remote_weights, fed_eval)

  initial = plan_lib.initial_model_weights(task, SEED).trainable
  for a, b, w0 in zip(local_weights.trainable, remote_weights.trainable, initial):
    np.testing.assert_allclose(b, a, atol=1e-5, rtol=0)
    assert np.abs(a - w0).max() > 1e-3  # the model did train
  for local, far in zip(local_history, remote_history):
    assert local.keys() == far.keys()
    assert local['train_examples'] == far['train_examples'] > 0
    for key in ('train_loss', 'train_accuracy'):
      assert far[key] == pytest.approx(local[key], rel=1e-5, abs=1e-6)
  for key, value in local_eval.items():
    assert remote_eval[key] == pytest.approx(value, rel=1e-5, abs=1e-6)


def test_worker_killed_between_rounds_is_named(two_workers, fedavg):
  task, process = fedavg
  remote.set_remote_context([f'localhost:{w.port}' for w in two_workers], reconnect_timeout=1.0)
  state = process.initialize()
  datasets = [task.preprocess_train(task.train_data.create_tf_dataset_for_client(c), seed=0)
              for c in task.train_data.client_ids[:4]]
  state = process.next(state, datasets).state
  os.kill(two_workers[1].pid, signal.SIGKILL)
  with pytest.raises(remote.WorkerError) as raised:
    process.next(state, datasets)
  assert raised.value.worker == f'localhost:{two_workers[1].port}'
  assert f'TFF worker localhost:{two_workers[1].port} ' in str(raised.value)
  assert 'unreachable' in str(raised.value) and '\n' not in str(raised.value)


@tff.tensorflow.computation(tff.TensorType(np.float32))
def _busy(seconds):
  """Keeps a worker busy for `seconds`, then returns them."""
  start = tf.timestamp()
  spins = tf.while_loop(lambda i: tf.timestamp() - start < tf.cast(seconds, tf.float64),
                        lambda i: i + 1, (tf.constant(0),))[0]
  return seconds + tf.cast(spins * 0, tf.float32)


@tff.federated_computation(tff.FederatedType(tff.TensorType(np.float32), tff.CLIENTS))
def _busy_sum(seconds):
  return tff.federated_sum(tff.federated_map(_busy, seconds))


def test_workers_run_their_clients_in_parallel(two_workers):
  remote.set_remote_context([f'localhost:{w.port}' for w in two_workers])
  assert _busy_sum([0.01, 0.01]) == pytest.approx(0.02)
  started = time.monotonic()
  assert _busy_sum([1.5, 1.5]) == pytest.approx(3.0)  # one client per worker
  assert time.monotonic() - started < 2.9  # one after the other would take >= 3 s


def test_worker_killed_during_a_computation_is_named(two_workers):
  remote.set_remote_context([f'localhost:{w.port}' for w in two_workers], reconnect_timeout=1.0)
  assert _busy_sum([0.01] * 4) == pytest.approx(0.04)
  killer = threading.Timer(1.0, os.kill, (two_workers[1].pid, signal.SIGKILL))
  killer.start()
  started = time.monotonic()
  try:
    with pytest.raises(remote.WorkerError, match=f'localhost:{two_workers[1].port} '):
      _busy_sum([8.0] * 4)
  finally:
    killer.join()
  assert time.monotonic() - started < 6.0  # failed promptly, not after the clients finished


@tff.tensorflow.computation(tff.TensorType(np.float32, [None]))
def _total(values):
  return tf.reduce_sum(values)


@tff.federated_computation(tff.FederatedType(tff.TensorType(np.float32, [None]), tff.CLIENTS))
def _federated_total(values):
  return tff.federated_sum(tff.federated_map(_total, values))


def test_rpc_failure_names_the_worker():
  port = portpicker.pick_unused_port()
  small = subprocess.Popen([workers.worker_binary_path(), f'--port={port}',
                            '--grpc_max_message_length_megabytes=1'],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    remote.set_remote_context([f'localhost:{port}'])
    with pytest.raises(remote.WorkerError,
                       match=rf'^TFF worker localhost:{port} failed: RESOURCE_EXHAUSTED: '):
      _federated_total([np.ones(300_000, np.float32)])  # a 1.2 MB argument
  finally:
    runtime.set_local_context()
    small.kill()
    small.wait()


def test_unreachable_worker_is_named(two_workers):
  alive = f'localhost:{two_workers[0].port}'
  remote.create_remote_context([alive])  # waits until it serves
  dead = f'localhost:{portpicker.pick_unused_port()}'
  started = time.monotonic()
  with pytest.raises(remote.WorkerError) as raised:
    remote.create_remote_context([alive, dead], ready_timeout=0.5)
  assert time.monotonic() - started < 5
  assert raised.value.worker == dead
  message = str(raised.value)
  assert dead in message and f':{two_workers[0].port}' not in message and '\n' not in message


@pytest.mark.parametrize('spec, expected', [
    ('localhost:8000', [('localhost', 8000)]),
    (' a:1, b:65535 ', [('a', 1), ('b', 65535)]),
    (['10.0.0.5:8000', '[::1]:8001'], [('10.0.0.5', 8000), ('::1', 8001)]),
])
def test_parse_workers(spec, expected):
  assert remote.parse_workers(spec) == expected


@pytest.mark.parametrize('spec, message', [
    ('', 'host:port'),
    ('localhost', "'localhost' has no port"),
    ('::1:8000', "'::1:8000' has no port"),
    (':8000', "':8000' has no host"),
    ('localhost:', 'port must be an integer in 1..65535'),
    ('localhost:0', "'localhost:0': port must be"),
    ('localhost:65536', "'localhost:65536': port must be"),
    ('localhost:http', "got 'http'"),
    ('a:1,,b:2', "'' has no port"),
    ('a:1,A:1', "'A:1' is listed more than once"),
])
def test_bad_worker_specs(spec, message):
  with pytest.raises(ValueError) as raised:
    remote.parse_workers(spec)
  assert message in str(raised.value) and '\n' not in str(raised.value)


def test_tff_worker_listens_everywhere_and_the_shim_restricts_it():
  plain = workers.ManagedWorker(host='0.0.0.0')  # as TFF starts it: no shim
  managed = workers.ManagedWorker()  # tff_lab's default
  port = portpicker.pick_unused_port()
  shimmed = subprocess.Popen([workers.worker_binary_path(), f'--port={port}'],
                             env=bind_shim.bind_env('127.0.0.1'),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    deadline = time.monotonic() + 30
    while not all(bind_shim.listening_addresses(p) for p in (plain.pid, managed.pid, shimmed.pid)
                  ) and time.monotonic() < deadline:
      time.sleep(0.05)
    assert bind_shim.listening_addresses(plain.pid) == [f'[::]:{plain.port}']  # TFF's default
    assert bind_shim.listening_addresses(shimmed.pid) == [f'127.0.0.1:{port}']
    assert bind_shim.listening_addresses(managed.pid) == [f'127.0.0.1:{managed.port}']
    for p in (plain.port, port):
      assert worker_cli.port_in_use('127.0.0.1', p) and worker_cli.port_in_use('0.0.0.0', p)
    assert not worker_cli.port_in_use('127.0.0.1', portpicker.pick_unused_port())
  finally:
    plain.stop()
    managed.stop()
    shimmed.kill()
    shimmed.wait()


@pytest.mark.parametrize('argv, message', [
    (['--port', '0'], '--port must be in 1..65535, got 0'),
    (['--port', '8000', '--host', 'example.com'], "--host must be an IPv4 address"),
])
def test_launcher_rejects_bad_flags(argv, message, capsys):
  assert worker_cli.main(argv) == 2
  err = capsys.readouterr().err
  assert message in err and err.count('\n') == 1


def test_launcher_refuses_a_port_in_use(capsys):
  worker = workers.ManagedWorker()
  try:
    deadline = time.monotonic() + 30
    while not bind_shim.listening_addresses(worker.pid) and time.monotonic() < deadline:
      time.sleep(0.05)
    assert worker_cli.main(['--port', str(worker.port)]) == 2
    err = capsys.readouterr().err
    assert f'port {worker.port} is already in use' in err and err.count('\n') == 1
  finally:
    worker.stop()


def _read_status_line(launcher: subprocess.Popen, timeout: float = 60.0) -> str:
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    ready, _, _ = select.select([launcher.stderr], [], [], 0.5)
    if ready:
      line = launcher.stderr.readline()
      if line.startswith('tff-lab-worker:'):
        return line
    elif launcher.poll() is not None:
      break
  raise AssertionError(f'launcher gave no status line (exit code {launcher.poll()})')


def test_launcher_serves_loopback_by_default_and_stops_with_signals():
  port_local, port_all = portpicker.pick_unused_port(), portpicker.pick_unused_port()
  launch = lambda *flags: subprocess.Popen(  # pylint: disable=g-long-lambda
      [sys.executable, '-m', 'tff_lab.runtime.worker_cli', *flags], cwd=REPO,
      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  local = launch('--port', str(port_local), '--max_concurrent_clients', '2')
  everywhere = launch('--port', str(port_all), '--host', '0.0.0.0')
  pids = []
  try:
    line = _read_status_line(local)
    pid = int(line.split('(pid ')[1].split(')')[0])
    pids.append(pid)
    assert f'listening on 127.0.0.1:{port_local}' in line and 'this machine only' in line
    assert bind_shim.listening_addresses(pid) == [f'127.0.0.1:{port_local}']
    with open(f'/proc/{pid}/cmdline', 'rb') as f:
      assert b'--max_concurrent_computation_calls=2' in f.read()
    remote.set_remote_context([f'127.0.0.1:{port_local}'])
    assert _busy_sum([0.01, 0.02]) == pytest.approx(0.03)
    runtime.set_local_context()

    line = _read_status_line(everywhere)
    pid_all = int(line.split('(pid ')[1].split(')')[0])
    pids.append(pid_all)
    assert 'WARNING' in line and 'EVERY interface' in line and f'[::]:{port_all}' in line

    local.send_signal(signal.SIGINT)  # Ctrl-C
    assert local.wait(timeout=30) == 0
    assert _wait_gone(pid)
    everywhere.kill()  # SIGKILL: the worker must die with its launcher
    everywhere.wait(timeout=30)
    assert _wait_gone(pid_all)
  finally:
    runtime.set_local_context()
    for process in (local, everywhere):
      if process.poll() is None:
        process.kill()
        process.wait()
    for pid in pids:
      if _alive(pid):
        os.kill(pid, signal.SIGKILL)
