"""Shared test set-up: quiet TensorFlow, and the managed TFF runtime for every test process."""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import tff_lab  # pylint: disable=unused-import,wrong-import-position  (installs the managed runtime)
