"""Task registry: every task builds, options come from signatures, errors are clear."""

import numpy as np
import pytest

from tff_lab import tasks
from tff_lab.data import tff_datasets


@pytest.mark.parametrize('name', tasks.task_names())
def test_every_task_builds_consistently(name):
  try:
    task = tasks.create_task(name)
  except tff_datasets.DatasetNotAvailableError as e:  # TFF's datasets need a download
    pytest.skip(str(e))
  assert task.name == name
  summary = task.summary()
  assert summary['num_train_clients'] == len(task.train_data.client_ids) > 1
  assert set(task.test_data.client_ids) == set(task.train_data.client_ids)
  x, y = task.centralized_test_data
  test_total = sum(len(task.test_data.create_tf_dataset_for_client(c))
                   for c in task.test_data.client_ids)
  assert len(x) == len(y) == test_total  # the pooled test set is the union of the test clients
  model = task.model_fn()
  preds = model(x[:4])
  assert preds.shape[0] == 4
  assert np.isfinite(float(task.loss_fn()(y[:4], preds)))


def test_options_are_read_from_signatures():
  options = tasks.task_options('digits')
  assert options['partition'] == 'dirichlet' and options['alpha'] == 0.5
  assert 'alpha' in tasks.task_options('synthetic') and 'model' in tasks.task_options('seed_linear')


def test_options_change_the_task():
  a = tasks.create_task('synthetic', {'num_devices': 7, 'iid': True})
  assert len(a.train_data.client_ids) == 7
  b = tasks.create_task('digits', {'num_clients': 10, 'partition': 'shards',
                                   'shards_per_client': 1, 'model': 'mlp'})
  for cid in b.train_data.client_ids:
    labels = [int(e['y']) for e in b.train_data.create_tf_dataset_for_client(cid)]
    # One shard is a contiguous run of the label-sorted data: consecutive classes only (~180
    # examples per shard against 174-183 per class, so at most three).
    assert max(labels) - min(labels) == len(set(labels)) - 1 and len(set(labels)) <= 3


@pytest.mark.parametrize('name, options, match', [
    ('cifar', None, "unknown task 'cifar'"),
    ('digits', {'alpah': 1.0}, r"no option\(s\) \['alpah'\]"),
    ('seed_linear', {'model': 'mlp'}, 'seed_linear model must be one of'),
    ('digits', {'model': 'resnet'}, 'digits model must be one of'),
])
def test_bad_task_requests(name, options, match):
  with pytest.raises(ValueError, match=match):
    tasks.create_task(name, options)


@pytest.fixture
def unregister():
  """Removes the tasks a test registered."""
  from tff_lab.tasks import registry  # pylint: disable=g-import-not-at-top
  before = set(tasks.task_names())
  yield
  for name in set(tasks.task_names()) - before:
    del registry._BUILDERS[name]  # pylint: disable=protected-access


def _tiny_task(num_clients: int = 3, scale: float = 1.0, label: str = 'y', flip: bool = False):
  """A task on arrays, as a user's package builds one."""
  from tff_lab.data import client_data  # pylint: disable=g-import-not-at-top
  from tff_lab.tasks import task as task_lib  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  del label, flip
  clients = {f'c{i}': (scale * np.ones((4, 2), np.float32), np.zeros((4, 1), np.float32))
             for i in range(num_clients)}
  return task_lib.Task(
      name='t_tiny', train_data=client_data.from_arrays(clients),
      test_data=client_data.from_arrays(clients), centralized_test_data=client_data.pool(clients),
      model_fn=lambda: tf.keras.Sequential([tf.keras.layers.Input((2,)),
                                            tf.keras.layers.Dense(1)]),
      loss_fn=tf.keras.losses.MeanSquaredError, prediction_kind='sign')


def test_a_registered_task_is_a_task_like_the_built_in_ones(unregister):
  assert tasks.register('t_tiny', _tiny_task) is _tiny_task
  assert 't_tiny' in tasks.task_names() and 't_tiny' in tasks.TASK_BUILDERS
  assert tasks.task_options('t_tiny') == {'num_clients': 3, 'scale': 1.0, 'label': 'y',
                                          'flip': False}
  task = tasks.create_task('t_tiny', {'num_clients': 5})
  assert len(task.train_data.client_ids) == 5
  with pytest.raises(TypeError):
    tasks.TASK_BUILDERS['x'] = _tiny_task  # a read-only view: add tasks with register


def _no_default(num_clients):
  del num_clients


def _kwargs(**options):
  del options


def _list_default(sizes=(1, 2)):
  del sizes


@pytest.mark.parametrize('name, builder, match', [
    ('digits', _tiny_task, "^task 'digits' is already registered$"),
    ('my task', _tiny_task, 'task name must be an identifier'),
    ('t_a', _no_default, "^task 't_a': builder option 'num_clients' has no default; every option "
     'needs a bool, int, float or str default'),
    ('t_b', _kwargs, "builder parameter 'options' is \\*args/\\*\\*kwargs"),
    ('t_c', _list_default, "option 'sizes' defaults to \\(1, 2\\), a tuple"),
])
def test_bad_registrations_are_one_line(unregister, name, builder, match):
  with pytest.raises(ValueError, match=match) as error:
    tasks.register(name, builder)
  assert '\n' not in str(error.value)
  assert tasks.TASK_BUILDERS.get(name) is not builder
