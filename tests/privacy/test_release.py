"""The DP metrics policy: private metrics withheld by default, released only on opt-in with a
statement that ε does not cover them; what ε covers classified by name, failing closed."""

import collections

import pytest

from tff_lab.privacy import release

# A round's metrics as the loop names them (dp='fixed', TFF path, top-k compression, faults).
ROUND = collections.OrderedDict([
    ('train_loss', 0.7), ('train_accuracy', 0.6), ('train_examples', 1234),
    ('upload_bytes_per_client', 400), ('download_bytes_per_client', 4000),
    ('float32_upload_bytes_per_client', 4000), ('compression_ratio', 10.0),
    ('aggregator/dp/num_clients', 9), ('aggregator/dp/upload_bytes_per_client', 400),
    ('client_work/train/num_batches', 31), ('faults/dropped', 1),
    ('dp_epsilon', 2.5), ('dp_delta', 1e-5), ('round_seconds', 1.2),
    ('fed_eval_loss', 0.8), ('fed_eval_accuracy', 0.55), ('central_eval_loss', 0.9),
    ('central_eval_accuracy', 0.5), ('some_new_metric', 3.0),
])
PRIVATE = {'train_loss', 'train_accuracy', 'train_examples', 'client_work/train/num_batches',
           'round_seconds', 'fed_eval_loss', 'fed_eval_accuracy', 'some_new_metric'}


def test_withheld_by_default_removes_what_client_data_gives_without_noise():
  out = release.release_metrics(ROUND)
  assert out.mode == 'withheld'
  assert set(out.withheld) == PRIVATE
  assert list(out.metrics) == [k for k in ROUND if k not in PRIVATE]  # order kept
  assert 'train_examples' not in out.metrics
  assert all(out.metrics[k] == ROUND[k] for k in out.metrics)


def test_public_releases_everything_and_names_what_epsilon_does_not_cover():
  out = release.release_metrics(ROUND, 'public')
  assert out.metrics == ROUND and out.withheld == ()
  assert set(out.not_covered) == PRIVATE
  statement = release.coverage_statement('public', out.classes)
  assert 'NOT covered' in statement and 'train_examples' in statement


@pytest.mark.parametrize('name,sampling,dp,expected', [
    ('aggregator/dp_query_metrics/clip', 'fixed', 'adaptive', 'covered'),
    ('finalizer/update_non_finite', 'fixed', 'fixed', 'covered'),
    ('central_eval_accuracy', 'poisson', 'fixed', 'server_data'),
    ('dp_epsilon', 'fixed', 'fixed', 'accounting'),
    ('aggregator/num_clients', 'fixed', 'fixed', 'public'),
    ('aggregator/num_clients', 'poisson', 'fixed', 'private'),  # the sample size is private
    ('faults/byzantine', 'poisson', 'fixed', 'private'),
    ('aggregator/clipping_norm', 'fixed', 'fixed', 'public'),
    ('aggregator/clipping_norm', 'fixed', 'adaptive', 'private'),
    ('aggregator/clipped_count', 'fixed', 'adaptive', 'private'),  # not the DP query's
    ('aggregator/clipped_coordinates', 'fixed', 'fixed', 'private'),
    ('aggregator/secagg/client_seconds', 'fixed', 'fixed', 'private'),
    ('aggregator/secagg/masked_vectors_held', 'fixed', 'fixed', 'public'),
    ('aggregator/secagg/threshold', 'poisson', 'fixed', 'private'),
    ('aggregator/dp_noise_stddev', 'fixed', 'fixed', 'public'),
])
def test_classes(name, sampling, dp, expected):
  assert release.classify(name, sampling=sampling, dp=dp) == expected


def test_secure_aggregation_byte_counts_are_private_under_poisson_only():
  metrics = {'aggregator/secagg/threshold': 5, 'upload_bytes_per_client': 9000}
  assert 'upload_bytes_per_client' in release.release_metrics(metrics).metrics
  assert release.release_metrics(metrics, sampling='poisson').metrics == {}


def test_policy_summary_states_coverage():
  policy = release.MetricsPolicy()
  assert 'train_loss' not in policy.apply(ROUND)
  summary = policy.summary(seen=['central_eval_auc'])
  assert summary['mode'] == 'withheld'
  assert set(summary['withheld']) == PRIVATE
  assert 'central_eval_auc' in summary['server_data']
  assert summary['accounting'] == ['dp_delta', 'dp_epsilon']
  assert 'Withheld' in summary['statement'] and 'train_examples' in summary['statement']
  assert 'dp_epsilon bounds' in summary['statement']


@pytest.mark.parametrize('kwargs,match', [
    (dict(mode='noised'), 'mode'),
    (dict(sampling='shuffle'), 'sampling'),
    (dict(dp='none'), 'dp'),
])
def test_bad_arguments_are_refused(kwargs, match):
  with pytest.raises(ValueError, match=match):
    release.release_metrics(ROUND, **kwargs)
