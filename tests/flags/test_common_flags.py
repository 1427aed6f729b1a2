"""Shared flags are defined once, whichever binary's module asks first."""

from absl import flags

from tff_lab.flags import common_flags


def test_progress_flag_is_shared():
  a = common_flags.define_progress_flag()
  b = common_flags.define_progress_flag()
  assert a.name == b.name == 'progress' and flags.FLAGS['progress'].default is True
