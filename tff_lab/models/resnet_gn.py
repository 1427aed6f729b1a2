"""ResNet-18 with group normalisation, the CIFAR-100 model of TFF's baselines.

Batch normalisation's running statistics do not average well across non-IID clients; Hsieh et
al., "The Non-IID Data Quagmire of Decentralized Machine Learning", ICML 2020 (arXiv:1910.00189)
replace it by group normalisation (Wu and He, ECCV 2018, arXiv:1803.08494), and Reddi et al.,
"Adaptive Federated Optimization", ICLR 2021 (arXiv:2003.00295) train this ResNet-18 on 24×24
crops of federated CIFAR-100. The network is TFF's own (`tff.simulation.baselines.cifar100`'s
`resnet_models.create_resnet18`): a pre-activation ResNet v2 (He et al., ECCV 2016,
arXiv:1603.05027) with basic blocks [2, 2, 2, 2], a 7×7/2 stem and 3×3/2 max-pool, Keras'
`GroupNormalization` (32 groups), and a softmax output with L2 weight decay 1e-4.
"""

from collections.abc import Sequence

import tensorflow as tf
from tensorflow_federated.python.simulation.models import resnet_models


def build_resnet18_gn(input_shape: Sequence[int] = (24, 24, 3),
                      num_classes: int = 100) -> tf.keras.Model:
  """ResNet-18 with group normalisation; outputs class probabilities."""
  return resnet_models.create_resnet18(tuple(input_shape), num_classes,
                                       norm_layer=resnet_models.NormLayer.GROUP_NORM)
