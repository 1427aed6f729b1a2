"""Task flags generated from task builder signatures."""

from absl import flags
import pytest

from tff_lab.flags import task_flags


def test_task_flags_follow_signatures(parse):
  parse('--task=digits', '--digits_alpha=0.1', '--digits_partition=shards')
  opts = task_flags.task_options_from_flags('digits')
  assert opts['alpha'] == 0.1 and opts['partition'] == 'shards' and opts['num_clients'] == 20
  parse('--synthetic_iid')
  with pytest.raises(ValueError, match='--synthetic_iid is set but --task=digits'):
    task_flags.task_options_from_flags('digits')
