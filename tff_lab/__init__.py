"""tff_lab: a research toolkit for federated learning on TensorFlow Federated.

Importing the package makes a managed local C++ worker TFF's default execution context, so no
`worker_binary` started on behalf of tff_lab code can outlive this process (see
`tff_lab/runtime/workers.py`). The worker itself starts on the first computation.
"""

import os as _os

# TensorFlow's C++ start-up chatter (CUDA probes on a CPU machine) hides the progress bar.
_os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from tff_lab import runtime as _runtime  # pylint: disable=g-import-not-at-top,wrong-import-position

_runtime.set_local_context()

__version__ = '0.1.0'
