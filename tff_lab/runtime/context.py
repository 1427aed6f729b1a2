"""The one place that sets TFF's execution context.

Importing `tensorflow_federated` installs a default context that, on first use, starts an
unmanaged `worker_binary` (see `workers.py` for why that leaks). `set_local_context` replaces it
with the same C++ runtime, driven the same way (a `RemoteExecutor` over gRPC, exactly as
`tff.backends.native.create_sync_local_cpp_execution_context` does), but with a worker whose
lifetime this process owns.

Every tff_lab entry point (training loop, benchmarks, notebook helpers) calls `set_local_context`
before running any computation; `import tff_lab` also installs it, so code that only imports the
library is covered too. The worker itself starts lazily, on the first computation.
"""

import threading
import time
from typing import Optional

import grpc
import tensorflow_federated as tff
# TFF does not export these building blocks publicly; they are the ones its own
# `local_cpp_executor_factory` uses, so the runtime behaves exactly like TFF's default.
from tensorflow_federated.python.core.backends.native import compiler
from tensorflow_federated.python.core.environments.tensorflow_frontend import tensorflow_computation
from tensorflow_federated.python.core.impl.context_stack import context_stack_impl
from tensorflow_federated.python.core.impl.execution_contexts import sync_execution_context
from tensorflow_federated.python.core.impl.executor_stacks import python_executor_stacks
from tensorflow_federated.python.core.impl.executors import remote_executor
from tensorflow_federated.python.core.impl.executors import remote_executor_grpc_stub

from tff_lab.runtime import workers

# Same limits as TFF's own local runtime.
_GRPC_MAX_MESSAGE_LENGTH_BYTES = 2 * 1000 * 1000 * 1000
GRPC_CHANNEL_OPTIONS = (
    ('grpc.max_message_length', _GRPC_MAX_MESSAGE_LENGTH_BYTES),
    ('grpc.max_receive_message_length', _GRPC_MAX_MESSAGE_LENGTH_BYTES),
    ('grpc.max_send_message_length', _GRPC_MAX_MESSAGE_LENGTH_BYTES),
)
_READY_TIMEOUT_SECONDS = 60.0


class _ManagedService:
  """Starts (and after a crash, restarts) one managed local worker and hands out its stub."""

  def __init__(self, max_concurrent_computation_calls: int):
    self._max_calls = max_concurrent_computation_calls
    self._lock = threading.Lock()
    self.worker: Optional[workers.ManagedWorker] = None
    self._stub = None

  def get_stub(self) -> remote_executor_grpc_stub.RemoteExecutorGrpcStub:
    with self._lock:
      if self._stub is not None and self._stub.is_ready and self.worker.alive():
        return self._stub
      if self.worker is not None:
        self.worker.stop()
      self.worker = workers.ManagedWorker(
          max_concurrent_computation_calls=self._max_calls)
      channel = grpc.insecure_channel(f'127.0.0.1:{self.worker.port}', GRPC_CHANNEL_OPTIONS)
      self._stub = remote_executor_grpc_stub.RemoteExecutorGrpcStub(channel)
      deadline = time.monotonic() + _READY_TIMEOUT_SECONDS
      while not self._stub.is_ready:
        if not self.worker.alive():
          raise RuntimeError(f'TFF worker_binary exited with code {self.worker.process.returncode} '
                             'before it became ready.')
        if time.monotonic() > deadline:
          raise RuntimeError(f'TFF worker_binary on port {self.worker.port} not ready after '
                             f'{_READY_TIMEOUT_SECONDS:.0f}s.')
        time.sleep(0.05)
      return self._stub


_current_service: Optional[_ManagedService] = None


def create_local_context(
    max_concurrent_clients: int = -1, default_num_clients: int = 0
) -> tuple[sync_execution_context.SyncExecutionContext, _ManagedService]:
  """Builds a synchronous context on a managed local C++ worker.

  Args:
    max_concurrent_clients: Upper bound on client computations the worker runs in parallel (TFF's
      `max_concurrent_computation_calls`); non-positive means no limit.
    default_num_clients: CLIENTS cardinality used when a computation's arguments do not imply one.

  Returns:
    The context and the service object that owns its worker.
  """
  service = _ManagedService(max_concurrent_clients)

  def stack_fn(cardinalities):
    if cardinalities.get(tff.CLIENTS) is None:
      cardinalities[tff.CLIENTS] = default_num_clients
    executor = remote_executor.RemoteExecutor(service.get_stub())
    executor.set_cardinalities(cardinalities)
    return executor

  context = sync_execution_context.SyncExecutionContext(
      executor_fn=python_executor_stacks.ResourceManagingExecutorFactory(stack_fn),
      compiler_fn=compiler.desugar_and_transform_to_native,
      transform_args=tensorflow_computation.transform_args,
      transform_result=tensorflow_computation.transform_result,
  )
  return context, service


def set_local_context(max_concurrent_clients: int = -1, default_num_clients: int = 0) -> None:
  """Makes a managed local C++ worker TFF's default execution context.

  Any previously managed worker is stopped. See `create_local_context` for the arguments.
  """
  global _current_service
  context, service = create_local_context(max_concurrent_clients, default_num_clients)
  context_stack_impl.context_stack.set_default_context(context)
  previous, _current_service = _current_service, service
  if previous is not None and previous.worker is not None:
    previous.worker.stop()


def current_worker() -> Optional[workers.ManagedWorker]:
  """The managed worker behind the current context, if one has started."""
  return None if _current_service is None else _current_service.worker
