"""Algorithm hyperparameter flags, generated from the registered algorithm specs: `--<name>`.

Every hyperparameter of every registered algorithm (`tff_lab.algorithms.spec.AlgorithmSpec.hparams`,
built-in ones and `tff_lab.algorithms.register`ed ones) gets one flag of its type, e.g.
FedProx's `mu` becomes `--mu`. Algorithms that share a name share the flag (the registry refuses
the same name with two types). A flag has no default of its own: unset, the algorithm's default
applies, so the flag cannot drift from the spec. Only flags given on the command line reach
`ExperimentConfig.algorithm_hparams`, and one the selected algorithm does not take is refused
(by `ExperimentConfig.validate`, naming the algorithms that take it).

`define_algorithm_flags()` defines the flags of the hyperparameters registered since its last
call, so a console script calls it again after importing its `--plugin` modules.
"""

from typing import Any

from absl import flags

from tff_lab.algorithms import registry

_DEFINE = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float,
           str: flags.DEFINE_string}
_DEFINED: set[str] = set()  # hyperparameter names whose flags this process has defined


def define_algorithm_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines `--<name>` for every registered hyperparameter not defined yet."""
  for name, (hparam, takers) in registry.hparam_specs().items():
    if name in _DEFINED and name in flag_values:
      continue
    defaults = ', '.join(f'{t}: {registry.get(t).hparams[name].default!r}' for t in takers)
    extra = f' One of {list(hparam.choices)}.' if hparam.choices else ''
    _DEFINE[hparam.type](name, None, f'{hparam.help}{extra} (--algorithm={"|".join(takers)}; '
                         f'default {defaults})', flag_values=flag_values)
    _DEFINED.add(name)


def algorithm_hparams_from_flags(flag_values: flags.FlagValues = flags.FLAGS) -> dict[str, Any]:
  """The hyperparameters given on the command line, by name (unset ones are left out)."""
  return {name: flag_values[name].value for name in registry.hparam_specs()
          if name in flag_values and flag_values[name].present}
