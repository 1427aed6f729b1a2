"""Parsing the experiment binary's flags in-process."""

from absl import flags
import pytest

from tff_lab import cli  # pylint: disable=unused-import  (defines the flags)


@pytest.fixture
def parse():
  """Parses the given command-line flags; restores the defaults afterwards."""
  def _parse(*argv):
    flags.FLAGS.unparse_flags()
    flags.FLAGS(['prog', *argv])
  yield _parse
  flags.FLAGS.unparse_flags()
