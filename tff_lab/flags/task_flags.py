"""Task flags, generated from each task builder's signature: `--<task>_<option>`.

Every registered task has its flags (built-in ones and `tff_lab.tasks.register`ed ones); e.g.
`build_digits_task(alpha=0.5)` becomes `--digits_alpha=0.5`. A flag has the type of its option's
default (or of its annotation, for a `None` default). Only the flags of the selected task are
read, and setting another task's flag is refused so a typo cannot silently do nothing.

`define_task_flags()` defines the flags of the tasks registered since its last call, so a console
script calls it again after importing its `--plugin` modules (`tff_lab.plugins`).
"""

from typing import Any

from absl import flags

from tff_lab.tasks import registry


def _flag_name(task: str, option: str) -> str:
  return f'{task}_{option}'


_DEFINE = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float,
           str: flags.DEFINE_string}
_DEFINED: set[str] = set()  # tasks whose flags this process has defined


def define_option_flags(prefix: str, options, what: str) -> None:
  """Defines `--<prefix>_<option>` for each `tff_lab.builder_options.Option` in `options`."""
  for option, spec in options.items():
    _DEFINE[spec.type or str](_flag_name(prefix, option), spec.default,
                              f'{what}: {spec.help or option + "."}')


def define_task_flags() -> None:
  """Defines the flags of every registered task not defined yet."""
  for task in registry.task_names():
    if task not in _DEFINED:
      define_option_flags(task, registry.task_option_specs(task), f'Task {task}')
      _DEFINED.add(task)


def task_options_from_flags(task: str) -> dict[str, Any]:
  """The options of `task` as set by flags (all of them, defaults included).

  Raises:
    ValueError: If another task's flag was set on the command line.
  """
  for other in registry.task_names():
    if other == task:
      continue
    for option in registry.task_options(other):
      name = _flag_name(other, option)
      if name in flags.FLAGS and flags.FLAGS[name].present:
        raise ValueError(f'--{name} is set but --task={task}')
  options = registry.task_options(task)  # raises for an unknown task
  missing = [o for o in options if _flag_name(task, o) not in flags.FLAGS]
  if missing:
    raise ValueError(f'task {task!r} was registered after its flags were defined (no '
                     f'--{_flag_name(task, missing[0])}): register it in a --plugin module')
  return {o: flags.FLAGS[_flag_name(task, o)].value for o in options}
