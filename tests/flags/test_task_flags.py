"""Task flags generated from task builder signatures."""

from typing import Optional

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


def _user_task(size: int = 3, rate: float = 0.5, kind: str = 'a', noisy: bool = False,
               cap: Optional[int] = None):
  del size, rate, kind, noisy, cap


def test_a_task_registered_later_gets_typed_flags(parse):
  from tff_lab.tasks import registry  # pylint: disable=g-import-not-at-top
  registry.register('t_flagtask', _user_task)
  try:
    with pytest.raises(ValueError, match="'t_flagtask' was registered after its flags were "
                       'defined'):
      parse('--task=t_flagtask')
      task_flags.task_options_from_flags('t_flagtask')
    task_flags.define_task_flags()  # what a console script does after its --plugin imports
    task_flags.define_task_flags()  # and again: nothing is defined twice
    parse('--t_flagtask_size=7', '--t_flagtask_rate=2', '--t_flagtask_noisy',
          '--t_flagtask_cap=4')
    assert task_flags.task_options_from_flags('t_flagtask') == {
        'size': 7, 'rate': 2.0, 'kind': 'a', 'noisy': True, 'cap': 4}
    with pytest.raises(ValueError, match='--t_flagtask_size is set but --task=digits'):
      task_flags.task_options_from_flags('digits')
  finally:
    del registry._BUILDERS['t_flagtask']  # pylint: disable=protected-access
