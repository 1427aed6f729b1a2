"""tff_lab: a research toolkit for federated learning on TensorFlow Federated.

Importing the package makes a managed local C++ worker TFF's default execution context, so no
`worker_binary` started on behalf of tff_lab code can outlive this process (see
`tff_lab/runtime/workers.py`). The worker itself starts on the first computation.
"""

import os as _os

# TensorFlow 2.14's C++ start-up chatter on a CPU machine (CUDA/cuDNN/TensorRT probes, logged at
# ERROR level) would bury the progress bar and the one-line input errors. Set TF_CPP_MIN_LOG_LEVEL
# yourself (e.g. 0) to see it.
_os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
# tff_lab forks worker processes that exec at once; gRPC's fork handlers are not needed in them and
# were seen (once) to hang the child before exec.
_os.environ.setdefault('GRPC_ENABLE_FORK_SUPPORT', 'false')

from tff_lab import runtime as _runtime  # pylint: disable=g-import-not-at-top,wrong-import-position

_runtime.set_local_context()

__version__ = '0.1.0'
