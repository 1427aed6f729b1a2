"""Named tasks, and their options as read from each builder's signature.

Adding a task means adding its `build_*_task` function to `TASK_BUILDERS`; its keyword arguments
become the task's options (and, in the experiment binary, `--<task>_<option>` flags), following
google-research/federated's practice of generating task flags from constructor signatures.
"""

import collections
from collections.abc import Callable, Mapping
import dataclasses
import inspect
from typing import Any, Optional

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

TASK_BUILDERS: Mapping[str, Callable[..., task_lib.Task]] = collections.OrderedDict(
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


def task_names() -> list[str]:
  return list(TASK_BUILDERS)


def task_options(name: str) -> 'collections.OrderedDict[str, Any]':
  """Returns the task's options and their defaults, in signature order."""
  builder = _builder(name)
  return collections.OrderedDict(
      (p.name, p.default) for p in inspect.signature(builder).parameters.values())


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
  if name not in TASK_BUILDERS:
    raise ValueError(f'unknown task {name!r}; choose one of {task_names()}')
  return TASK_BUILDERS[name]
