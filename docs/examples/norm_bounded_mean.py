"""Example plugin: a norm-bounded mean, an aggregator of your own (docs/extending.md, example 1).

Each client's update is scaled down to L2 norm at most `bound`, then the server averages (the
norm-bounding defence of Sun et al., "Can You Really Backdoor Federated Learning?",
arXiv:1911.07963). Written on tff_lab's public `GatheredRuleFactory`, so the rule is one method
and the communication counters come with it.

    tff-lab-run --plugin=norm_bounded_mean --aggregator=norm_bounded_mean \
        --norm_bounded_mean_bound=0.5
"""

import collections

import tensorflow as tf
import tensorflow_federated as tff

import tff_lab.aggregators


class NormBoundedMeanFactory(tff_lab.aggregators.GatheredRuleFactory):
  """The mean of the clients' updates, each scaled to L2 norm at most `bound`."""

  def __init__(self, bound: float):
    if not bound > 0:
      raise ValueError(f'norm_bounded_mean bound must be > 0, got {bound}')
    super().__init__()
    self._bound = float(bound)

  def rule(self, stacked):
    norms = tf.norm(stacked, axis=1, keepdims=True)
    scale = tf.minimum(1.0, self._bound / tf.maximum(norms, 1e-12))
    return tf.reduce_mean(stacked * scale, axis=0), collections.OrderedDict(
        bounded_clients=tf.reduce_sum(tf.cast(norms[:, 0] > self._bound, tf.int32)))


def build(weighted: bool, bound: float = 1.0):
  """The factory for an algorithm that weights clients (`weighted`) or not; it counts each
  client once either way, as robust rules do."""
  factory = NormBoundedMeanFactory(bound)
  return tff.aggregators.as_weighted_aggregator(factory) if weighted else factory


tff_lab.aggregators.register('norm_bounded_mean', build)
