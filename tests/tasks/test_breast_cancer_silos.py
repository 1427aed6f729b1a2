"""The breast_cancer_silos task: a few hospitals with skewed sizes and case mixes."""

import numpy as np
import pytest

from tff_lab import tasks


def _arrays(data, client_id):
  batch = next(iter(data.create_tf_dataset_for_client(client_id).batch(10_000)))
  return batch['x'].numpy(), batch['y'].numpy()


def _silos(task):
  return {c: [_arrays(d, c) for d in (task.train_data, task.test_data)]
          for c in task.train_data.client_ids}


@pytest.mark.parametrize('partition', ['dirichlet', 'quantity', 'iid'])
def test_every_tumour_in_one_hospital(partition):
  task = tasks.create_task('breast_cancer_silos', {'partition': partition})
  silos = _silos(task)
  assert len(silos) == 5
  sizes = [len(tr[1]) + len(te[1]) for tr, te in silos.values()]
  assert sum(sizes) == 569 and min(sizes) >= 20
  labels = np.concatenate([np.concatenate([tr[1], te[1]]) for tr, te in silos.values()])
  assert labels.sum() == 212  # Malignant tumours are the positive class.
  train_x = np.concatenate([tr[0] for tr, _ in silos.values()])
  np.testing.assert_allclose(train_x.mean(axis=0), 0.0, atol=1e-4)  # Standardised on train.
  np.testing.assert_allclose(train_x.std(axis=0), 1.0, atol=1e-3)


def test_skew():
  def skew(partition, **options):
    silos = _silos(tasks.create_task('breast_cancer_silos',
                                     dict(partition=partition, seed=1, **options)))
    sizes = np.array([len(tr[1]) + len(te[1]) for tr, te in silos.values()])
    malignant = np.array([(tr[1].sum() + te[1].sum()) for tr, te in silos.values()]) / sizes
    return sizes.std() / sizes.mean(), np.abs(malignant - 212 / 569).mean()

  iid = skew('iid')
  quantity = skew('quantity', sigma=1.5)
  label = skew('dirichlet', alpha=0.3)
  assert quantity[0] > 3 * iid[0]              # Quantity skew: unequal hospital sizes...
  assert quantity[1] < label[1]                # ...with the same case mix;
  assert label[1] > 3 * iid[1]                 # Dirichlet: case mixes differ.


def test_model():
  task = tasks.create_task('breast_cancer_silos', {})
  assert task.prediction_kind == 'binary'
  model = task.model_fn()
  assert model.count_params() == 31
  x, _ = _arrays(task.test_data, task.test_data.client_ids[0])
  probs = model(x).numpy()
  assert probs.shape == (len(x), 1) and ((probs > 0) & (probs < 1)).all()


def test_bad_partition():
  with pytest.raises(ValueError, match='partition'):
    tasks.create_task('breast_cancer_silos', {'partition': 'shards'})
