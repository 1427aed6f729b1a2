"""ResNet-18 with group normalisation."""

import numpy as np
import tensorflow as tf

from tff_lab.models import resnet_gn


def test_resnet18_structure_and_forward_pass():
  model = resnet_gn.build_resnet18_gn((24, 24, 3), num_classes=100)
  convs = [l for l in model.layers if isinstance(l, tf.keras.layers.Conv2D)]
  # 18 weight layers: the stem, 8 basic blocks of two 3×3 convolutions, the classifier; plus 1×1
  # projection shortcuts where the width doubles.
  assert sum(l.kernel_size != (1, 1) for l in convs) == 17
  assert sum(l.kernel_size == (1, 1) for l in convs) == 3
  assert sum(isinstance(l, tf.keras.layers.Dense) for l in model.layers) == 1
  norms = [l for l in model.layers if isinstance(l, tf.keras.layers.GroupNormalization)]
  assert norms and all(l.groups == 32 for l in norms)
  assert not any(isinstance(l, tf.keras.layers.BatchNormalization) for l in model.layers)
  probs = model(np.random.default_rng(0).normal(size=(2, 24, 24, 3)).astype(np.float32))
  assert probs.shape == (2, 100)
  np.testing.assert_allclose(np.sum(probs, axis=1), 1.0, rtol=1e-5)
