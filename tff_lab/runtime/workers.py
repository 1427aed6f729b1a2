"""Lifecycle of TFF's C++ `worker_binary` processes.

TFF 0.87 executes every computation in a C++ executor service, `worker_binary`, that it starts
itself with a bare `subprocess.Popen` (see
`tensorflow_federated/python/core/impl/executor_stacks/executor_factory.py`). Nothing ties that
process to its parent: when Python exits, is killed, or dies of an exception, the worker lives on
as an orphan that holds the parent's stdout open (so a CI pipe never closes) and keeps ~200 MB.

This module starts workers so that they cannot outlive the process that started them:

* The child asks the kernel for `PR_SET_PDEATHSIG = SIGKILL` before it `exec`s the binary, so the
  kernel kills it the moment its parent dies, whether by normal exit, exception, SIGTERM or SIGKILL.
* `PR_SET_PDEATHSIG` fires when the *thread* that forked the child ends, not the process. Workers
  are therefore always forked from one long-lived daemon thread owned by this module, which lives
  exactly as long as the process.
* An `atexit` hook also stops workers politely on a normal exit.
* `worker_binary` listens on every interface and its gRPC service is unauthenticated (anyone who
  reaches the port can run TensorFlow graphs as this user). A managed worker is therefore bound
  to 127.0.0.1 through `bind_shim` unless another host is asked for.
"""

import atexit
import ctypes
import os
import queue
import signal
import subprocess
import sys
import threading
from typing import Optional

import portpicker

from tff_lab.runtime import bind_shim

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)


def worker_binary_path() -> str:
  """Returns the path of the `worker_binary` shipped inside the TFF wheel."""
  import tensorflow_federated  # pylint: disable=g-import-not-at-top

  path = os.path.join(os.path.dirname(tensorflow_federated.__file__), 'data', 'worker_binary')
  if not os.path.isfile(path):
    raise RuntimeError(f'TFF worker binary not found at {path}; is tensorflow-federated installed?')
  return path


def die_with_parent(parent_pid: int) -> None:
  """Runs in the forked child before exec: ask for SIGKILL when the parent thread dies."""
  if _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
    os._exit(127)  # pylint: disable=protected-access
  # The parent may have died between fork and prctl; then we were already re-parented.
  if os.getppid() != parent_pid:
    os._exit(0)  # pylint: disable=protected-access


class _Spawner:
  """A daemon thread that forks every worker, so PDEATHSIG tracks the process, not a caller thread."""

  def __init__(self):
    self._requests: 'queue.Queue' = queue.Queue()
    self._thread = threading.Thread(target=self._run, name='tff_lab-worker-spawner', daemon=True)
    self._thread.start()

  def _run(self):
    while True:
      args, kwargs, reply = self._requests.get()
      try:
        reply.put((True, subprocess.Popen(*args, **kwargs)))
      except BaseException as e:  # pylint: disable=broad-except
        reply.put((False, e))

  def popen(self, *args, **kwargs) -> subprocess.Popen:
    reply: 'queue.Queue' = queue.Queue(maxsize=1)
    self._requests.put((args, kwargs, reply))
    ok, value = reply.get()
    if not ok:
      raise value
    return value


_spawner: Optional[_Spawner] = None
_spawner_lock = threading.Lock()
_live_workers: list['ManagedWorker'] = []


def _get_spawner() -> _Spawner:
  global _spawner
  with _spawner_lock:
    if _spawner is None:
      _spawner = _Spawner()
    return _spawner


class ManagedWorker:
  """One `worker_binary` process that dies with this Python process.

  Attributes:
    port: The gRPC port the worker serves on.
    process: The `subprocess.Popen` handle.
  """

  def __init__(self, port: Optional[int] = None, max_concurrent_computation_calls: int = -1,
               quiet: bool = True, host: str = '127.0.0.1'):
    """Starts the worker.

    Args:
      port: The port to serve on; an unused one is picked when None.
      max_concurrent_computation_calls: TFF's limit on parallel calls of one computation (for
        example the clients of one `federated_map`); non-positive means unlimited.
      quiet: Send the worker's own logging to /dev/null instead of this process's stderr.
      host: The IPv4 address to listen on (`bind_shim`); if the shim cannot be built (no C
        compiler) the worker listens on every interface, as TFF's own does, with a warning.
    """
    self.port = port or portpicker.pick_unused_port()
    args = [worker_binary_path(), f'--port={self.port}',
            f'--max_concurrent_computation_calls={max_concurrent_computation_calls}']
    sink = subprocess.DEVNULL if quiet else None
    try:
      env = None if bind_shim.is_wildcard(host) else bind_shim.bind_env(host)
    except bind_shim.BindShimError as e:
      print(f'tff_lab: WARNING: TFF worker on port {self.port} listens on every interface ({e})',
            file=sys.stderr)
      env = None
    parent_pid = os.getpid()
    self.process = _get_spawner().popen(
        args, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink, env=env,
        preexec_fn=lambda: die_with_parent(parent_pid))
    _live_workers.append(self)

  @property
  def pid(self) -> int:
    return self.process.pid

  def alive(self) -> bool:
    return self.process.poll() is None

  def stop(self, timeout: float = 5.0) -> None:
    """Stops the worker: SIGTERM, then SIGKILL after `timeout` seconds."""
    if self.alive():
      self.process.send_signal(signal.SIGTERM)
      try:
        self.process.wait(timeout)
      except subprocess.TimeoutExpired:
        self.process.kill()
        self.process.wait()
    if self in _live_workers:
      _live_workers.remove(self)

  def __repr__(self):
    return f'ManagedWorker(pid={self.pid}, port={self.port}, alive={self.alive()})'


def live_workers() -> list[ManagedWorker]:
  """Returns the workers this process started that are still running."""
  return [w for w in _live_workers if w.alive()]


@atexit.register
def stop_all_workers() -> None:
  """Stops every worker this process started (also registered with `atexit`)."""
  for worker in list(_live_workers):
    try:
      worker.stop(timeout=2.0)
    except Exception as e:  # pylint: disable=broad-except
      print(f'tff_lab: could not stop worker {worker.pid}: {e}', file=sys.stderr)
