"""The Shakespeare LSTM: McMahan et al.'s structure, and TFF's baseline model weight for weight."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_lab.models import shakespeare

TFF_MODELS = tff.simulation.baselines.shakespeare.char_prediction_models
VOCAB_SIZE = 90  # TFF's 86 characters + 4 specials (building an LSTM model takes seconds).


@pytest.fixture(scope='module', name='model')
def fixture_model():
  return shakespeare.build_shakespeare_lstm(VOCAB_SIZE)


def test_structure(model):
  lstm = lambda inputs, units=256: 4 * (units * (inputs + units) + units)  # 4 gates: W, U, b.
  assert model.count_params() == VOCAB_SIZE * 8 + lstm(8) + lstm(256) + 257 * VOCAB_SIZE
  assert [type(layer).__name__ for layer in model.layers[1:]] == [
      'Embedding', 'LSTM', 'LSTM', 'Dense']
  embedding, lstm_1, lstm_2, dense = model.layers[1:]
  assert embedding.output_dim == 8 and embedding.mask_zero
  assert lstm_1.units == lstm_2.units == 256 and lstm_1.return_sequences and lstm_2.return_sequences
  assert dense.activation is tf.keras.activations.linear  # Logits.
  assert model.input_shape == (None, 80) and model.output_shape == (None, 80, VOCAB_SIZE)


def test_same_function_as_tff_baseline_model(model):
  theirs = TFF_MODELS.create_recurrent_model(vocab_size=VOCAB_SIZE, sequence_length=80)
  assert [w.shape for w in model.get_weights()] == [w.shape for w in theirs.get_weights()]
  theirs.set_weights(model.get_weights())
  x = np.random.default_rng(0).integers(1, VOCAB_SIZE, (3, 80))
  x[1, 50:] = 0  # Padding is masked in both.
  np.testing.assert_allclose(model(x).numpy(), theirs(x).numpy(), rtol=1e-5, atol=1e-6)


def test_invalid_sizes():
  with pytest.raises(ValueError, match='vocab_size'):
    shakespeare.build_shakespeare_lstm(0)
