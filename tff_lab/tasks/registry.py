"""Named tasks, and their options as read from each builder's signature.

A built-in task is one `build_*_task` function in `_BUILT_IN`; a task of your own package is
`tff_lab.tasks.register(name, builder)` (from a module the console scripts import with
`--plugin=my_package.my_module`). Either way the builder's keyword arguments become the task's
options (and, in the experiment binary, `--<task>_<option>` flags), following
google-research/federated's practice of generating task flags from constructor signatures.
`register` refuses, in one line, a name registered twice and a builder whose options cannot be
flags (no default, or a default that is not a bool, int, float or str; see
`tff_lab.builder_options`).
"""

import collections
from collections.abc import Callable, Mapping
import dataclasses
import types
from typing import Any, Optional

from tff_lab import builder_options
from tff_lab.tasks import breast_cancer_silos
from tff_lab.tasks import cifar100
from tff_lab.tasks import digits
from tff_lab.tasks import emnist
from tff_lab.tasks import mnist5k
from tff_lab.tasks import seed_linear
from tff_lab.tasks import shakespeare
from tff_lab.tasks import shakespeare_plays
from tff_lab.tasks import stackoverflow
from tff_lab.tasks import synthetic
from tff_lab.tasks import task as task_lib

_BUILT_IN = collections.OrderedDict(
    seed_linear=seed_linear.build_seed_linear_task,
    synthetic=synthetic.build_synthetic_task,
    digits=digits.build_digits_task,
    emnist62=emnist.build_emnist62_task,
    emnist10=emnist.build_emnist10_task,
    shakespeare=shakespeare.build_shakespeare_task,
    stackoverflow_word=stackoverflow.build_stackoverflow_word_task,
    stackoverflow_tag=stackoverflow.build_stackoverflow_tag_task,
    cifar100=cifar100.build_cifar100_task,
    shakespeare_plays=shakespeare_plays.build_shakespeare_plays_task,
    mnist5k=mnist5k.build_mnist5k_task,
    breast_cancer_silos=breast_cancer_silos.build_breast_cancer_silos_task,
)
_BUILDERS: 'collections.OrderedDict[str, Callable[..., task_lib.Task]]' = collections.OrderedDict(
    _BUILT_IN)
# Every task, built-in and registered (a read-only view: add tasks with `register`).
TASK_BUILDERS: Mapping[str, Callable[..., task_lib.Task]] = types.MappingProxyType(_BUILDERS)


def register(name: str, builder: Callable[..., task_lib.Task]) -> Callable[..., task_lib.Task]:
  """Adds task `name`, built by `builder(**options)` (a `tff_lab.tasks.Task`); returns `builder`.

  Its keyword parameters are the task's options and, in the console scripts, its
  `--<name>_<option>` flags, so each needs a default of type bool, int, float or str (or `None`
  with an `Optional[...]` annotation).

  Raises:
    ValueError: One line, for a name that is not an identifier or is already registered, or an
      option that cannot be a flag.
    TypeError: If `builder` is not callable.
  """
  if not isinstance(name, str) or not name.isidentifier():
    raise ValueError(f'task name must be an identifier (it prefixes the flags --<name>_<option>), '
                     f'got {name!r}')
  if name in _BUILDERS:
    raise ValueError(f'task {name!r} is already registered')
  builder_options.check_options(builder, f'task {name!r}')
  _BUILDERS[name] = builder
  return builder


def task_names() -> list[str]:
  return list(_BUILDERS)


def task_options(name: str) -> 'collections.OrderedDict[str, Any]':
  """Returns the task's options and their defaults, in signature order."""
  return collections.OrderedDict(
      (option, spec.default) for option, spec in task_option_specs(name).items())


def task_option_specs(name: str) -> 'collections.OrderedDict[str, builder_options.Option]':
  """The task's options with their defaults and flag types, in signature order."""
  return builder_options.options(_builder(name))


def create_task(name: str, options: Optional[Mapping[str, Any]] = None,
                train_spec: Optional[task_lib.ClientSpec] = None) -> task_lib.Task:
  """Builds task `name` with `options` (unset options keep their defaults).

  Raises:
    ValueError: For an unknown task or option.
  """
  builder = _builder(name)
  options = dict(options or {})
  unknown = sorted(set(options) - set(task_options(name)))
  if unknown:
    raise ValueError(f'task {name!r} has no option(s) {unknown}; '
                     f'its options are {list(task_options(name))}')
  task = builder(**options)
  if train_spec is not None:
    task = dataclasses.replace(task, train_spec=train_spec)
  return task


def _builder(name: str) -> Callable[..., task_lib.Task]:
  if name not in _BUILDERS:
    raise ValueError(f'unknown task {name!r}; choose one of {task_names()}')
  return _BUILDERS[name]
