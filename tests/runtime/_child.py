"""A child process for test_workers.py: runs a TFF computation, then ends as asked.

Usage: python _child.py MODE    (MODE: exit | raise | wait)
Prints `WORKER <pid>` once the managed worker_binary is serving.
"""

import os
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import tensorflow as tf  # pylint: disable=g-import-not-at-top
import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top

import tff_lab  # pylint: disable=g-import-not-at-top,unused-import


@tff.tensorflow.computation
def one():
  return tf.constant(1.0)


assert one() == 1.0
print(f'WORKER {tff_lab.runtime.current_worker().pid}', flush=True)
mode = sys.argv[1]
if mode == 'raise':
  raise RuntimeError('child failing on purpose')
if mode == 'wait':
  time.sleep(600)
