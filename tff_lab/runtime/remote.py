"""Multi-worker execution: each round's clients spread over TFF executor services on several hosts.

One machine runs the training loop; every host runs TFF's C++ executor service (`worker_binary`,
started with `tff-lab-worker --port=N`, see `worker_cli.py`). `create_remote_context` connects to
them with TFF's mergeable-computation context
(`tff.backends.native.create_mergeable_comp_execution_context`): TFF compiles each computation to
`MergeableCompForm` (the work up to its one aggregation, the merge, the work after it), splits the
`CLIENTS`-placed arguments into one contiguous slice per worker, runs each slice on its worker
through an ordinary async `RemoteExecutor` context, and merges the partial aggregates. Sums are
merged in a different order than on one worker, so results agree with a local run to float32
round-off (tested to 1e-5 in tests/runtime/test_remote.py). Partial aggregates are merged in the
order workers finish: with two workers that is exact (addition commutes), with three or more,
repeated runs can differ at float32 round-off.

TFF's `RemoteExecutor` makes blocking gRPC calls inside its coroutines, so on the mergeable
context's single event loop the workers would run one after another (measured: two workers took
twice as long as one). Each worker's context here runs on its own event-loop thread instead.

A worker that dies is named. TFF retries `UNAVAILABLE` gRPC errors forever (with back-off up to
30 s), so a dead worker would make `process.next` hang; here every retry first waits at most
`reconnect_timeout` seconds for the worker's gRPC channel, then raises `WorkerError` naming it. A
worker restarted within that time is simply reused (the failed slice of the round is re-run, as
TFF intends). Other gRPC failures are re-raised as `WorkerError` naming the worker, too.

The channels are unauthenticated and unencrypted (TFF's `worker_binary` only serves plain gRPC):
use this on a trusted network only.
"""

import asyncio
from collections.abc import Sequence
import threading
import time
from typing import Union
import weakref

import grpc
import tensorflow_federated as tff
# TFF does not export these building blocks publicly; they are the ones its own
# `local_cpp_executor_factory` uses (see `context.py`).
from tensorflow_federated.python.core.backends.native import compiler
from tensorflow_federated.python.core.environments.tensorflow_frontend import tensorflow_computation
from tensorflow_federated.python.core.impl.context_stack import context_stack_impl
from tensorflow_federated.python.core.impl.execution_contexts import async_execution_context
from tensorflow_federated.python.core.impl.execution_contexts import mergeable_comp_execution_context
from tensorflow_federated.python.core.impl.executor_stacks import python_executor_stacks
from tensorflow_federated.python.core.impl.executors import remote_executor
from tensorflow_federated.python.core.impl.executors import remote_executor_grpc_stub

from tff_lab.runtime import context as context_lib

WorkerSpec = Union[str, Sequence[str]]


class WorkerError(RuntimeError):
  """A remote TFF worker is unreachable, or failed while running a computation.

  Attributes:
    worker: The worker's 'host:port'.
  """

  def __init__(self, worker: str, message: str):
    super().__init__(message)
    self.worker = worker


def parse_workers(spec: WorkerSpec) -> list[tuple[str, int]]:
  """Parses 'host:port,host:port' (or a list of 'host:port') into (host, port) pairs.

  IPv6 literals are written in brackets: '[::1]:8000'.

  Raises:
    ValueError: (one line) for an empty list, an entry without a host or port, a port that is not
      an integer in 1..65535, or the same worker listed twice.
  """
  entries = spec.split(',') if isinstance(spec, str) else list(spec)
  entries = [e.strip() for e in entries]
  if not entries or entries == ['']:
    raise ValueError(f"workers must be 'host:port[,host:port...]', got {spec!r}")
  parsed, seen = [], set()
  for entry in entries:
    host, sep, port = entry.rpartition(':')
    if not sep or (':' in host and not (host.startswith('[') and host.endswith(']'))):
      raise ValueError(f"worker {entry!r} has no port; write host:port, e.g. localhost:8000 "
                       "(IPv6: [::1]:8000)")
    host = host[1:-1] if host.startswith('[') else host
    if not host:
      raise ValueError(f'worker {entry!r} has no host; write host:port, e.g. localhost:8000')
    if not port.isdigit() or not 1 <= int(port) <= 65535:
      raise ValueError(f'worker {entry!r}: port must be an integer in 1..65535, got {port!r}')
    key = (host.lower(), int(port))
    if key in seen:
      raise ValueError(f'worker {entry!r} is listed more than once in {spec!r}')
    seen.add(key)
    parsed.append((host, int(port)))
  return parsed


def _address(host: str, port: int) -> str:
  return f'[{host}]:{port}' if ':' in host else f'{host}:{port}'


class _Worker:
  """The gRPC channel and TFF stub of one remote executor service."""

  def __init__(self, host: str, port: int):
    self.address = _address(host, port)
    self.channel = grpc.insecure_channel(self.address, context_lib.GRPC_CHANNEL_OPTIONS)
    self.stub = remote_executor_grpc_stub.RemoteExecutorGrpcStub(self.channel)

  def ready_future(self) -> grpc.Future:
    return grpc.channel_ready_future(self.channel)


def _unreachable_message(addresses: Sequence[str], seconds: float) -> str:
  which = (f'worker {addresses[0]} is' if len(addresses) == 1 else
           f'workers {", ".join(addresses)} are')
  return (f'TFF {which} unreachable (no gRPC connection within {seconds:g}s); is '
          '`tff-lab-worker` running there and the port open?')


class _WorkerContext(async_execution_context.AsyncExecutionContext):
  """TFF's async C++-runtime context on one remote worker, on an event-loop thread of its own.

  The own thread lets workers run in parallel (see the module docstring); failures are re-raised
  as `WorkerError` naming the worker.
  """

  def __init__(self, worker: _Worker, default_num_clients: int, reconnect_timeout: float):
    self.worker = worker
    self._loop = asyncio.new_event_loop()
    threading.Thread(target=self._loop.run_forever, name=f'tff_lab-remote-{worker.address}',
                     daemon=True).start()
    weakref.finalize(self, self._loop.call_soon_threadsafe, self._loop.stop)

    def stack_fn(cardinalities):
      # Called for the first computation and again on every TFF retry after a gRPC failure.
      try:
        worker.ready_future().result(timeout=reconnect_timeout)
      except grpc.FutureTimeoutError:
        raise WorkerError(worker.address,
                          _unreachable_message([worker.address], reconnect_timeout)) from None
      if cardinalities.get(tff.CLIENTS) is None:
        cardinalities[tff.CLIENTS] = default_num_clients
      executor = remote_executor.RemoteExecutor(worker.stub)
      executor.set_cardinalities(cardinalities)
      return executor

    super().__init__(
        executor_fn=python_executor_stacks.ResourceManagingExecutorFactory(stack_fn),
        compiler_fn=compiler.desugar_and_transform_to_native,
        transform_args=tensorflow_computation.transform_args,
        transform_result=tensorflow_computation.transform_result)

  async def invoke(self, comp, arg):
    call = super().invoke(comp, arg)
    try:
      return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(call, self._loop))
    except grpc.RpcError as e:
      code = e.code().name if isinstance(e, grpc.Call) else type(e).__name__
      details = ((e.details() if isinstance(e, grpc.Call) else str(e)) or '').splitlines()
      raise WorkerError(self.worker.address,
                        f'TFF worker {self.worker.address} failed: {code}: '
                        f'{details[0] if details else ""}') from e


def create_remote_context(
    workers: WorkerSpec, default_num_clients: int = 0, ready_timeout: float = 10.0,
    reconnect_timeout: float = 30.0,
) -> mergeable_comp_execution_context.MergeableCompExecutionContext:
  """Builds a context that spreads each computation's clients over remote TFF workers.

  Args:
    workers: 'host:port,host:port', or a list of 'host:port' (see `parse_workers`).
    default_num_clients: CLIENTS cardinality on each worker when a computation's arguments do not
      imply one (a no-argument computation runs once per worker).
    ready_timeout: Seconds to wait for every worker to accept a gRPC connection.
    reconnect_timeout: Seconds a computation waits for a worker whose connection failed before
      raising `WorkerError`.

  Returns:
    TFF's mergeable-computation context over one async remote context per worker.

  Raises:
    ValueError: For a malformed `workers` spec or non-positive timeouts.
    WorkerError: Naming the worker(s) that did not accept a connection within `ready_timeout`.
  """
  for name, value in (('ready_timeout', ready_timeout), ('reconnect_timeout', reconnect_timeout)):
    if not value > 0:
      raise ValueError(f'{name} must be positive, got {value}')
  remotes = [_Worker(host, port) for host, port in parse_workers(workers)]
  futures = [w.ready_future() for w in remotes]
  deadline = time.monotonic() + ready_timeout
  unreachable = []
  for worker, future in zip(remotes, futures):
    try:
      future.result(timeout=max(0.0, deadline - time.monotonic()))
    except grpc.FutureTimeoutError:
      unreachable.append(worker.address)
  if unreachable:
    for worker in remotes:
      worker.channel.close()
    raise WorkerError(unreachable[0], _unreachable_message(unreachable, ready_timeout))
  return tff.backends.native.create_mergeable_comp_execution_context(
      [_WorkerContext(w, default_num_clients, reconnect_timeout) for w in remotes])


def set_remote_context(workers: WorkerSpec, default_num_clients: int = 0,
                       ready_timeout: float = 10.0, reconnect_timeout: float = 30.0) -> None:
  """Makes remote workers TFF's default execution context (see `create_remote_context`).

  The managed local worker, if one is running, is stopped; `set_local_context()` goes back to it.
  """
  context = create_remote_context(workers, default_num_clients, ready_timeout, reconnect_timeout)
  context_stack_impl.context_stack.set_default_context(context)
  local_worker = context_lib.current_worker()
  if local_worker is not None:
    local_worker.stop()
