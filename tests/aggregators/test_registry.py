"""Registered aggregators: refused builders, validation before tracing, and the stack around one."""

from typing import Optional

import numpy as np
import pytest
import tensorflow_federated as tff

from tff_lab import aggregators
from tff_lab.aggregators import registry
from tff_lab.aggregators import stack


@pytest.fixture(autouse=True)
def _unregister():
  """Removes what a test registered."""
  before = set(registry.names())
  yield
  for name in set(registry.names()) - before:
    del registry._BUILDERS[name]  # pylint: disable=protected-access


def build_norm_mean(weighted: bool, max_norm: float = 1.0):
  if max_norm <= 0:
    raise ValueError(f'max_norm must be positive, got {max_norm}')
  mean = tff.aggregators.MeanFactory() if weighted else tff.aggregators.UnweightedMeanFactory()
  return tff.aggregators.clipping_factory(max_norm, mean)


def test_register_is_public_and_refuses_a_second_registration():
  assert aggregators.register('t_norm_mean', build_norm_mean) is build_norm_mean
  assert 't_norm_mean' in registry.names()
  assert list(registry.option_specs('t_norm_mean')) == ['max_norm']
  with pytest.raises(ValueError, match="^aggregator 't_norm_mean' is already registered$"):
    aggregators.register('t_norm_mean', build_norm_mean)


def _no_default(weighted, max_norm):
  del weighted, max_norm


def _kwargs(weighted, **options):
  del weighted, options


def _list_default(weighted, norms=(1.0, 2.0)):
  del weighted, norms


def _untyped_none(weighted, norm=None):
  del weighted, norm


def _weighted_second(max_norm: float = 1.0, weighted: bool = True):
  del weighted, max_norm


@pytest.mark.parametrize('name, builder, match', [
    ('median', build_norm_mean, "'median' is built in"),
    ('norm-mean', build_norm_mean, 'must be an identifier'),
    ('t_a', _no_default, "option 'max_norm' has no default"),
    ('t_b', _kwargs, "'options' is \\*args/\\*\\*kwargs"),
    ('t_c', _list_default, "option 'norms' defaults to \\(1.0, 2.0\\), a tuple"),
    ('t_d', _untyped_none, "option 'norm' defaults to None without a type"),
    ('t_e', _weighted_second, 'first parameter must be `weighted`'),
])
def test_bad_builders_are_refused_in_one_line(name, builder, match):
  with pytest.raises(ValueError, match=match) as error:
    aggregators.register(name, builder)
  assert '\n' not in str(error.value)
  assert name not in registry.names()


def test_typed_none_default_is_accepted():
  def builder(weighted, norm: Optional[float] = None):
    del norm
    return tff.aggregators.MeanFactory() if weighted else tff.aggregators.UnweightedMeanFactory()
  aggregators.register('t_none', builder)
  assert registry.option_specs('t_none')['norm'].type is float
  assert registry.resolve_options('t_none', {'norm': 2}) == {'norm': 2}


@pytest.mark.parametrize('settings, match', [
    ({'dp': 'fixed', 'clip_norm': 1.0, 'noise_multiplier': 1.0}, 'cannot be combined with dp'),
    ({'compression': 'topk'}, 'cannot be combined with compression'),
    ({'secure_aggregation': True}, 'cannot be combined with secure_aggregation'),
    ({'aggregator_options': {'max_nrm': 1.0}}, r"no option\(s\) \['max_nrm'\]"),
    ({'aggregator_options': {'max_norm': 'big'}}, "'max_norm' must be a float, got 'big'"),
])
def test_settings_it_cannot_run_are_refused(settings, match):
  aggregators.register('t_norm_mean', build_norm_mean)
  with pytest.raises(ValueError, match=match):
    aggregators.validate_aggregation_settings(aggregator='t_norm_mean', **settings)


def test_options_only_apply_to_a_registered_aggregator():
  with pytest.raises(ValueError, match='only applies to a registered aggregator'):
    aggregators.validate_aggregation_settings(aggregator='median',
                                              aggregator_options={'max_norm': 1.0})
  with pytest.raises(ValueError, match="unknown aggregator 't_gone'"):
    aggregators.validate_aggregation_settings(aggregator='t_gone')


def test_wrong_kind_and_builder_errors_are_one_line():
  aggregators.register('t_unweighted_only',
                       lambda weighted: tff.aggregators.UnweightedMeanFactory())
  with pytest.raises(ValueError, match='returned a UnweightedMeanFactory for weighted=True; the '
                     'algorithm needs a weighted'):
    registry.build('t_unweighted_only', weighted=True)
  assert isinstance(registry.build('t_unweighted_only', weighted=False),
                    tff.aggregators.UnweightedAggregationFactory)
  aggregators.register('t_norm_mean', build_norm_mean)
  with pytest.raises(ValueError, match="aggregator 't_norm_mean': max_norm must be positive"):
    registry.build('t_norm_mean', True, {'max_norm': -1.0})


def test_clipping_composes_before_it_and_bytes_are_counted():
  aggregators.register('t_norm_mean', build_norm_mean)
  value_type = tff.TensorType(np.float32, [2])
  values = [np.array([3.0, 4.0], np.float32), np.array([0.0, 0.1], np.float32)]
  # Its own clip (max_norm=1) alone, then the stack's tighter clip_norm=0.5 before it.
  for clip_norm, norm in ((None, 1.0), (0.5, 0.5)):
    settings = {'aggregator': 't_norm_mean', 'aggregator_options': {'max_norm': 1.0}}
    if clip_norm:
      settings['clip_norm'] = clip_norm
    process = stack.create_aggregator(weighted=False, **settings).create(value_type)
    output = process.next(process.initialize(), values)
    clipped = [v * min(1.0, norm / np.linalg.norm(v)) for v in values]
    np.testing.assert_allclose(output.result, np.mean(clipped, axis=0), rtol=1e-6)
    m = output.measurements  # the byte counts sit where TFF nests the rule (under clipping)
    counted = m['clipping'] if clip_norm else m
    assert counted['num_clients'] == 2 and counted['upload_bytes_per_client'] == 8, m
    assert ('clipped_fraction' in m) == bool(clip_norm), m


def test_every_backend_runs_a_registered_aggregator_or_refuses_it_in_one_line():
  """Part of the config, so each backend's check sees it (none may silently use the mean)."""
  from tff_lab.simulation import backends  # pylint: disable=g-import-not-at-top
  from tff_lab.training import config as config_lib  # pylint: disable=g-import-not-at-top
  aggregators.register('t_norm_mean', build_norm_mean)
  runs = {}
  for name in backends.simulation_names() + ('secure',):
    settings = dict(aggregation={'aggregator': 't_norm_mean'}, simulation=name)
    if name == 'secure':
      settings = dict(aggregation={'aggregator': 't_norm_mean', 'secure_aggregation': True},
                      simulation='tff')
    config = config_lib.ExperimentConfig(**settings)
    try:
      config.validate()
      runs[name] = backends.resolve(config)[0].simulation
    except config_lib.ConfigError as e:
      assert '\n' not in str(e) and str(e), name
      runs[name] = None
  assert runs == {'auto': 'tff', 'tff': 'tff', 'fused': None, 'vectorized': None, 'async': None,
                  'secure': None}


class _CountedMeanFactory(tff.aggregators.UnweightedAggregationFactory):
  """A user's factory written on the exported counters: the mean, reporting its bytes."""

  def create(self, value_type):

    @tff.federated_computation()
    def init_fn():
      return tff.federated_value((), tff.SERVER)

    @tff.federated_computation(init_fn.type_signature.result,
                               tff.FederatedType(value_type, tff.CLIENTS))
    def next_fn(state, value):
      return tff.templates.MeasuredProcessOutput(
          state, tff.federated_mean(value), aggregators.dense_communication(value))

    return tff.templates.AggregationProcess(init_fn, next_fn)


def test_the_exported_building_blocks_serve_a_factory_of_your_own():
  value_type = tff.TensorType(np.float32, [3])
  assert aggregators.type_bytes(value_type) == 12
  assert aggregators.type_bytes(tff.StructType([value_type, tff.TensorType(np.int32, [2])])) == 20
  process = _CountedMeanFactory().create(value_type)
  values = [np.ones(3, np.float32), np.zeros(3, np.float32), np.full(3, 2.0, np.float32)]
  output = process.next(process.initialize(), values)
  np.testing.assert_allclose(output.result, np.ones(3))
  m = output.measurements
  assert (m['num_clients'], m['upload_bytes_per_client'], m['download_bytes_per_client'],
          m['compression_ratio']) == (3, 12, 12, 1.0)

  class _CoordinateMax(aggregators.GatheredRuleFactory):  # a rule is one method
    def rule(self, stacked):
      import collections  # pylint: disable=g-import-not-at-top
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      return tf.reduce_max(stacked, axis=0), collections.OrderedDict(
          rows=tf.shape(stacked)[0])

  gathered = _CoordinateMax().create(value_type)
  output = gathered.next(gathered.initialize(), values)
  np.testing.assert_allclose(output.result, np.full(3, 2.0))
  assert output.measurements['rows'] == 3 and output.measurements['num_clients'] == 3
