"""Flags more than one tff_lab binary defines, defined once per process.

absl keeps one global flag registry, so two binaries' modules imported together (as the test
suite does) must not both define `--progress`; each asks for it here instead.
"""

from absl import flags


PROGRESS_HELP = 'Show progress bars (--noprogress: none; tff-lab-run then logs one line per round).'


def define_progress_flag() -> flags.FlagHolder:
  """`--progress` (show progress bars; default True), defined on first use."""
  if 'progress' in flags.FLAGS:
    return flags.FlagHolder(flags.FLAGS, flags.FLAGS['progress'])
  return flags.DEFINE_bool('progress', True, PROGRESS_HELP)
