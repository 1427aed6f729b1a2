"""Durable writes: syncing a directory after a rename."""

import os

from tff_lab import files


def test_fsync_dir_after_a_rename_and_on_a_missing_directory(tmp_path):
  (tmp_path / 'a.tmp').write_text('x')
  os.replace(tmp_path / 'a.tmp', tmp_path / 'a')
  files.fsync_dir(str(tmp_path))  # no error: the rename is now durable
  files.fsync_dir(str(tmp_path / 'missing'))  # nothing to sync: returns quietly
  assert (tmp_path / 'a').read_text() == 'x'
