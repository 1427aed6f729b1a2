"""No TFF worker_binary outlives the process that started it, however that process ends.

Each test starts a child Python process that uses TFF through tff_lab (so a worker_binary
serves it), ends the child one way (normal exit, uncaught exception, SIGTERM, SIGKILL), and then
asserts that the worker is gone. The SIGTERM/SIGKILL cases kill a real training run
(experiments/run_experiment.py) mid-round.
"""

import os
import signal
import subprocess
import sys
import time

import pytest

from tff_lab import runtime

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), '_child.py')


def _alive(pid: int) -> bool:
  """True while `pid` exists and is not a zombie."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().split(')')[-1].split()[0] != 'Z'
  except FileNotFoundError:
    return False


def _worker_children(parent_pid: int) -> list[int]:
  found = []
  for entry in os.listdir('/proc'):
    if not entry.isdigit():
      continue
    try:
      with open(f'/proc/{entry}/stat') as f:
        stat = f.read()
      with open(f'/proc/{entry}/cmdline', 'rb') as f:
        cmdline = f.read()
    except OSError:
      continue
    ppid = int(stat.split(')')[-1].split()[1])
    if ppid == parent_pid and b'worker_binary' in cmdline:
      found.append(int(entry))
  return found


def _wait_gone(pid: int, timeout: float = 15.0) -> bool:
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if not _alive(pid):
      return True
    time.sleep(0.1)
  return False


def _kill_leftover(pid):
  if _alive(pid):
    os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize('mode, expected_code', [('exit', 0), ('raise', 1)])
def test_worker_dies_when_parent_exits(mode, expected_code):
  result = subprocess.run([sys.executable, CHILD, mode], capture_output=True, text=True,
                          timeout=300, cwd=REPO)
  assert result.returncode == expected_code, result.stderr[-2000:]
  pid = int(next(l for l in result.stdout.splitlines() if l.startswith('WORKER')).split()[1])
  try:
    assert _wait_gone(pid), f'worker_binary {pid} outlived its parent ({mode})'
  finally:
    _kill_leftover(pid)


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGKILL])
def test_worker_dies_when_training_process_is_killed(sig, tmp_path):
  cmd = [sys.executable, os.path.join(REPO, 'experiments', 'run_experiment.py'),
         '--task=seed_linear', '--rounds=100000', '--clients_per_round=5', '--eval_every=0',
         '--checkpoint_every=1000', f'--root_output_dir={tmp_path}', '--experiment_name=killed',
         '--noprogress']
  proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO)
  metrics = tmp_path / 'killed' / 'metrics.csv'
  workers = []
  try:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
      workers = _worker_children(proc.pid)
      if workers and metrics.exists() and metrics.read_text().count('\n') >= 3:
        break  # training rounds are running on the worker
      time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    assert workers, 'the training process never started a worker_binary'
    os.kill(proc.pid, sig)
    proc.wait(timeout=60)
    for pid in workers:
      assert _wait_gone(pid), f'worker_binary {pid} outlived its parent ({sig.name})'
  finally:
    if proc.poll() is None:
      proc.kill()
    proc.stderr.close()
    for pid in workers:
      _kill_leftover(pid)


def test_in_process_worker_restart_and_stop():
  worker = runtime.ManagedWorker()
  try:
    assert worker.alive()
    assert worker in runtime.live_workers()
  finally:
    worker.stop()
  assert not worker.alive()
  assert worker not in runtime.live_workers()
