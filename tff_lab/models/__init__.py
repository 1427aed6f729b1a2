"""Keras model builders: plain functions returning uncompiled `tf.keras.Model`s."""

from tff_lab.models.linear import build_linear
from tff_lab.models.linear import build_logistic_regression
from tff_lab.models.linear import build_softmax_regression
from tff_lab.models.mcmahan2017 import build_2nn
from tff_lab.models.mcmahan2017 import build_cnn
from tff_lab.models.mcmahan2017 import build_cnn_bn
from tff_lab.models.resnet_gn import build_resnet18_gn
from tff_lab.models.shakespeare import build_shakespeare_lstm
