"""shakespeare built from a tiny `shakespeare.sqlite` in TFF's format."""

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_federated.python.simulation.baselines.shakespeare import char_prediction_preprocessing

from tff_lab import tasks
from tff_lab.data import tff_datasets

VOCAB = char_prediction_preprocessing.CHAR_VOCAB
SNIPPETS = {
    'THE_TEMPEST_MIRANDA': ['If by your art, my dearest father, you have put the wild waters in '
                            'this roar, allay them.', 'O, I have suffered~'],
    'HAMLET_HAMLET': ['To be, or not to be: that is the question.'],
}


def expected_windows(snippet: str, length: int = 80):
  """TFF's framing, re-implemented: [begin] + ids + [end], zero-padded, cut every length + 1."""
  ids = [VOCAB.index(c) + 1 if c in VOCAB else len(VOCAB) + 1 for c in snippet]  # 0 is padding
  tokens = [len(VOCAB) + 2] + ids + [len(VOCAB) + 3]
  tokens += [0] * (-len(tokens) % (length + 1))
  windows = np.reshape(tokens, (-1, length + 1))
  return windows[:, :-1], windows[:, 1:]


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp('shakespeare')
  tff_datasets.write_sql_client_data(
      str(path / 'shakespeare.sqlite'),
      [(split, cid, {'snippets': s.encode()}) for split in ('train', 'test')
       for cid, snippets in SNIPPETS.items() for s in snippets])
  return str(path)


@pytest.fixture(scope='module')
def task(data_dir):
  return tasks.create_task('shakespeare', {'data_dir': data_dir})


def test_windows_match_tffs_framing(task):
  assert task.train_data.client_ids == sorted(SNIPPETS)
  for cid, snippets in SNIPPETS.items():
    got = list(task.train_data.create_tf_dataset_for_client(cid).as_numpy_iterator())
    expected = [w for s in snippets for w in zip(*expected_windows(s))]
    assert len(got) == len(expected)
    for e, (x, y) in zip(got, expected):
      np.testing.assert_array_equal(e['x'], x)
      np.testing.assert_array_equal(e['y'], y)
  # The first snippet spans two windows; '~' is out of vocabulary.
  assert len(expected_windows(SNIPPETS['THE_TEMPEST_MIRANDA'][0])[0]) == 2
  assert len(VOCAB) + 1 in expected_windows(SNIPPETS['THE_TEMPEST_MIRANDA'][1])[1]
  x, y = task.centralized_test_data
  assert x.shape == y.shape == (4, 80)


def test_model_on_one_batch(task):
  model = task.model_fn()
  layers = [l for l in model.layers if not isinstance(l, tf.keras.layers.InputLayer)]
  assert [type(l).__name__ for l in layers] == ['Embedding', 'LSTM', 'LSTM', 'Dense']
  assert layers[0].output_dim == 8 and layers[1].units == layers[2].units == 256
  x, y = task.centralized_test_data
  logits = model(x)
  assert logits.shape == (4, 80, len(VOCAB) + 4)
  loss = float(task.loss_fn()(y, logits))
  assert np.isfinite(loss) and abs(loss - np.log(len(VOCAB) + 4)) < 0.5  # near-uniform at init


def test_missing_data(tmp_path):
  with pytest.raises(tff_datasets.DatasetNotAvailableError,
                     match=f'^Shakespeare not found: expected {tmp_path}/shakespeare.sqlite '):
    tasks.create_task('shakespeare', {'data_dir': str(tmp_path)})
