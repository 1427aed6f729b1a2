"""`tff-lab-worker`: serves TFF's C++ executor service on this host for multi-worker runs.

    tff-lab-worker --port 8000                        # this machine only (127.0.0.1)
    tff-lab-worker --port 8000 --host 10.0.0.5        # reachable on one interface
    tff-lab-worker --port 8000 --host 0.0.0.0         # every interface (a loud warning)

Runs TFF's `worker_binary` (the executor service behind every local tff_lab computation) in the
foreground and prints the address it actually listens on. The training process connects with
`--workers=host:port,...` (`tff_lab.runtime.remote`).

* Address. `worker_binary` always listens on every interface and has no flag to change that; the
  launcher restricts it to `--host` (127.0.0.1 by default) with a preloaded bind shim
  (`bind_shim.py`), checks the result in /proc, and refuses to run if the shim did not take
  effect. The service is unauthenticated and unencrypted: use a trusted network.
* Port. `worker_binary` listens with SO_REUSEPORT, so a second worker on a busy port would start
  silently and receive half of the connections; the launcher refuses a port in use.
* Lifetime. Ctrl-C, SIGTERM and SIGHUP stop the worker and the launcher (exit code 0). The worker
  dies with the launcher (`PR_SET_PDEATHSIG`), and the launcher with the process that started it,
  so a worker never outlives its terminal or supervisor (run it under tmux, screen or systemd to
  keep it past a logout).
* Message size. `--grpc_max_message_length_megabytes` is passed as 2047: the binary multiplies it
  by 2**20 in a 32-bit int, so its default (10000) wraps to 1,895,825,408 bytes and 4096 wraps
  to 0 (measured: every request is then refused). 2047 MB is the largest value that does not
  wrap, above the 2 GB (2e9 bytes) that TFF's Python side allows.

Exit codes: 0 stopped by a signal, 2 bad flags / port in use / cannot restrict the address
(one line on stderr), otherwise the worker's own exit code.
"""

import argparse
import ctypes
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Optional

from tff_lab.runtime import bind_shim
from tff_lab.runtime import workers

# The largest value whose megabytes * 2**20 fits the binary's 32-bit int (see module docstring).
GRPC_MAX_MESSAGE_LENGTH_MEGABYTES = 2047
_LISTEN_TIMEOUT_SECONDS = 60.0
_PR_SET_PDEATHSIG = 1


def _parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
  # argparse rather than absl flags: absl's global flag registry would clash with the experiment
  # binary's flags (e.g. --max_concurrent_clients) in any process that imports both modules.
  parser = argparse.ArgumentParser(
      prog='tff-lab-worker', description='Serve TFF\'s C++ executor service (worker_binary).')
  parser.add_argument('--port', type=int, required=True, help='TCP port to serve on (1-65535).')
  parser.add_argument('--host', default='127.0.0.1',
                      help='IPv4 address to listen on: 127.0.0.1 (default, this machine only), '
                           'this machine\'s address on a trusted network, or 0.0.0.0 (every '
                           'interface).')
  parser.add_argument('--max_concurrent_clients', type=int, default=-1,
                      help='Client computations run in parallel on this worker (-1: all).')
  return parser.parse_args(argv)


def port_in_use(host: str, port: int) -> bool:
  """True if some process already listens on `port` at `host` (or on every interface)."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
    # SO_REUSEADDR ignores connections in TIME_WAIT; no SO_REUSEPORT, so any listener conflicts.
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
      probe.bind((host, port))
    except OSError:
      return True
  return False


def _fail(message: str) -> int:
  print(f'tff-lab-worker: error: {message}', file=sys.stderr)
  return 2


def _wait_listening(worker: subprocess.Popen) -> Optional[list[str]]:
  """The worker's listening addresses once it listens; None if it exits or times out first."""
  deadline = time.monotonic() + _LISTEN_TIMEOUT_SECONDS
  while time.monotonic() < deadline and worker.poll() is None:
    addresses = bind_shim.listening_addresses(worker.pid)
    if addresses:
      return addresses
    time.sleep(0.1)
  return None


def main(argv: Optional[list[str]] = None) -> int:
  """Console script `tff-lab-worker`; returns the exit code."""
  args = _parse_args(argv)
  if not 1 <= args.port <= 65535:
    return _fail(f'--port must be in 1..65535, got {args.port}')
  try:
    host = bind_shim.check_host(args.host)
  except ValueError as e:
    return _fail(f'--{e}')
  everywhere = host == '0.0.0.0'
  if port_in_use(host, args.port):
    return _fail(f'port {args.port} is already in use on {host} (another tff-lab-worker?)')
  try:
    env = None if everywhere else bind_shim.bind_env(host)
  except bind_shim.BindShimError as e:
    return _fail(f'{e}; cannot restrict the worker to {host}. Install a C compiler, or pass '
                 '--host=0.0.0.0 to serve on every interface (trusted network only).')

  # Die with whoever started us; the worker dies with us (PDEATHSIG, set in the child).
  ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
  parent_pid = os.getpid()
  worker = subprocess.Popen(
      [workers.worker_binary_path(), f'--port={args.port}',
       f'--max_concurrent_computation_calls={args.max_concurrent_clients}',
       f'--grpc_max_message_length_megabytes={GRPC_MAX_MESSAGE_LENGTH_MEGABYTES}'],
      stdin=subprocess.DEVNULL, env=env,
      preexec_fn=lambda: workers.die_with_parent(parent_pid))
  stopping = []

  def stop(signum, frame):
    del frame
    stopping.append(signum)
    if worker.poll() is None:
      worker.terminate()  # SIGTERM: SIGINT may be ignored when we run in a background job.

  for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(signum, stop)

  addresses = _wait_listening(worker)
  if addresses is None and stopping:
    return 0
  if addresses is None:
    if worker.poll() is None:
      worker.kill()
    code = worker.wait()
    return _fail(f'worker_binary (pid {worker.pid}) did not start listening on port {args.port} '
                 f'(exit code {code})')
  shown = ', '.join(addresses)
  if any(bind_shim.is_wildcard(a) for a in addresses):
    if not everywhere:
      worker.kill()
      worker.wait()
      return _fail(f'worker_binary listened on {shown} despite --host={host}; stopped it')
    print(f'tff-lab-worker: WARNING: worker_binary (pid {worker.pid}) listens on EVERY interface '
          f'({shown}) with NO authentication or encryption: anyone who can reach port '
          f'{args.port} can run arbitrary TensorFlow programs as this user. Use only on a '
          'trusted network.', file=sys.stderr, flush=True)
  else:
    scope = ('this machine only; for other hosts, use --host=<this host\'s address>'
             if ipaddress.IPv4Address(host).is_loopback else
             'unauthenticated and unencrypted: trusted network only')
    print(f'tff-lab-worker: worker_binary (pid {worker.pid}) listening on {shown} ({scope}). '
          'Ctrl-C stops it.', file=sys.stderr, flush=True)
  code = worker.wait()
  return 0 if stopping else code


if __name__ == '__main__':
  sys.exit(main())
