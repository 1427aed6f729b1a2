"""Shared test set-up: quiet TensorFlow, and the managed TFF runtime for every test process."""

import os
import tempfile

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
# Tasks that build a cache (shakespeare_plays) write to a throw-away folder, not ~/.cache.
os.environ.setdefault('TFF_LAB_CACHE', tempfile.mkdtemp(prefix='tff_lab_cache_'))

import tff_lab  # pylint: disable=unused-import,wrong-import-position  (installs the managed runtime)
