r"""Memory of the client store: one 2NN-sized control variate per client, for 10,000 clients.

SCAFFOLD keeps a model-sized control variate per client that has taken part
(`tff_lab.simulation.client_store`). This fills a `ClientStore` shaped like McMahan's 2NN
(784-200-200-10: 199,210 float32 parameters) for `--clients` clients, as SCAFFOLD's rounds do
(`get`, then `set` of a new state), and prints the resident memory it adds, the store's own byte
count, and the time to serialise it as a checkpoint extra part for the first `--checkpoint_clients`
clients (`tff_lab.training.checkpoint`; written to a temporary directory).

  .venv/bin/python benchmarks/client_store_memory.py --clients=10000
"""

import argparse
import collections
import tempfile
import time

import numpy as np
import psutil

from tff_lab.simulation import client_store
from tff_lab.training import checkpoint

SHAPES = [(784, 200), (200,), (200, 200), (200,), (200, 10), (10,)]  # the 2NN's trainable weights


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--clients', type=int, default=10_000)
  parser.add_argument('--checkpoint_clients', type=int, default=1_000)
  args = parser.parse_args()
  zeros = lambda: collections.OrderedDict(control_variate=[np.zeros(s, np.float32) for s in SHAPES])
  store = client_store.ClientStore(zeros, initial_server_state=zeros())
  me = psutil.Process()
  rss0 = me.memory_info().rss
  rng = np.random.default_rng(0)
  t0 = time.perf_counter()
  for i in range(args.clients):
    state = store.get(f'client_{i}')
    state['control_variate'][0][:] = rng.standard_normal(1, dtype=np.float32)  # touch the pages
    for a in state['control_variate']:
      a += 1.0
    store.set(f'client_{i}', state)
    if i + 1 == args.checkpoint_clients:
      small = client_store.ClientStore(zeros)
      small.restore(store.to_checkpoint())
      with tempfile.TemporaryDirectory() as d:
        c0 = time.perf_counter()
        path = checkpoint.save_checkpoint(d, 1, [np.zeros(1)],
                                          extra={'client_store': small.to_checkpoint()})
        import os  # pylint: disable=g-import-not-at-top
        size = os.path.getsize(path)
        c1 = time.perf_counter()
        checkpoint.read_checkpoint(d, 1, [np.zeros(1)])
        c2 = time.perf_counter()
      print(f'checkpoint of {args.checkpoint_clients} clients: {size / 2**20:.0f} MiB, written in '
            f'{c1 - c0:.1f} s, read in {c2 - c1:.1f} s', flush=True)
      del small
  fill = time.perf_counter() - t0
  rss = me.memory_info().rss - rss0
  params = sum(int(np.prod(s)) for s in SHAPES)
  print(f'{args.clients} clients x {params} float32 parameters: store.nbytes = '
        f'{store.nbytes / 2**30:.2f} GiB, resident memory added = {rss / 2**30:.2f} GiB '
        f'({rss / args.clients / 2**20:.3f} MiB per client), filled in {fill:.1f} s')


if __name__ == '__main__':
  main()
