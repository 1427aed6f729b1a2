"""Task flags, generated from each task builder's signature: `--<task>_<option>`.

Adding a task to `tff_lab.tasks.TASK_BUILDERS` adds its flags; e.g. `build_digits_task(alpha=0.5)`
becomes `--digits_alpha=0.5`. Only the flags of the selected task are read, and setting another
task's flag is refused so a typo cannot silently do nothing.
"""

from typing import Any

from absl import flags

from tff_lab.tasks import registry


def _flag_name(task: str, option: str) -> str:
  return f'{task}_{option}'


def define_task_flags() -> None:
  for task in registry.task_names():
    for option, default in registry.task_options(task).items():
      name, help_text = _flag_name(task, option), f'Task {task}: {option}.'
      if isinstance(default, bool):
        flags.DEFINE_bool(name, default, help_text)
      elif isinstance(default, int):
        flags.DEFINE_integer(name, default, help_text)
      elif isinstance(default, float):
        flags.DEFINE_float(name, default, help_text)
      else:
        flags.DEFINE_string(name, default, help_text)


def task_options_from_flags(task: str) -> dict[str, Any]:
  """The options of `task` as set by flags (all of them, defaults included).

  Raises:
    ValueError: If another task's flag was set on the command line.
  """
  for other in registry.task_names():
    if other == task:
      continue
    for option in registry.task_options(other):
      if flags.FLAGS[_flag_name(other, option)].present:
        raise ValueError(f'--{_flag_name(other, option)} is set but --task={task}')
  return {o: flags.FLAGS[_flag_name(task, o)].value for o in registry.task_options(task)}
