"""`--plugin=my_package.my_module`: your registrations, imported before the flags are parsed.

A plugin is any importable module whose import registers tasks (`tff_lab.tasks.register`),
algorithms (`tff_lab.algorithms.register`) or aggregators (`tff_lab.aggregators.register`).
absl defines flags at import time, so a console script scans `sys.argv` for `--plugin=M` and
`--plugin M` (repeatable) with `load_from_argv()` first, imports those modules, and only then
defines the flags of what they registered (`--<task>_<option>`, `--<aggregator>_<option>`) and
parses the command line. Modules are found on `sys.path` (`PYTHONPATH`), and in the current
directory, as with `python -m`. A plugin that does not import is one line and exit code 2.

The experiment's config.json records its plugins (`ExperimentConfig.plugins`), so re-running it
without them is refused, naming them.
"""

import importlib
import os
import sys
from typing import Optional, Sequence

from absl import flags

FLAG = 'plugin'


class PluginError(ValueError):
  """A plugin module does not import; the message (one line) names it."""


def plugins_in_argv(argv: Sequence[str]) -> list[str]:
  """The `--plugin` values in a command line (`argv[0]` is the program), in order."""
  found = []
  args = list(argv[1:])
  i = 0
  while i < len(args):
    arg = args[i]
    if arg == '--':  # absl stops parsing flags here
      break
    for prefix in (f'--{FLAG}=', f'-{FLAG}='):
      if arg.startswith(prefix):
        found.append(arg[len(prefix):])
    if arg in (f'--{FLAG}', f'-{FLAG}') and i + 1 < len(args):
      found.append(args[i + 1])
      i += 1
    i += 1
  return found


def load(modules: Sequence[str]) -> tuple[str, ...]:
  """Imports each module (once); returns their names, duplicates removed, in order.

  Raises:
    PluginError: One line, for a name that is not a module path or a module that fails to import
      (whatever it raises, e.g. a name registered twice).
  """
  names = tuple(dict.fromkeys(modules))
  for name in names:
    if not isinstance(name, str) or not all(p.isidentifier() for p in name.split('.')):
      raise PluginError(f'--plugin={name!r} is not a module name (e.g. my_package.my_module)')
    if os.getcwd() not in sys.path and '' not in sys.path:
      sys.path.append(os.getcwd())  # as `python -m` would find it, after everything else
    try:
      importlib.import_module(name)
    except Exception as e:  # pylint: disable=broad-except  (anything the module raises)
      raise PluginError(f'--plugin={name}: cannot import {name} '
                        f'({type(e).__name__}: {" ".join(str(e).split())})') from None
  return names


def load_from_argv(argv: Optional[Sequence[str]] = None) -> tuple[str, ...]:
  """For console entry points: imports the `--plugin` modules of `argv` (default `sys.argv`).

  On a plugin that does not import, prints one line on stderr and exits with code 2.
  """
  try:
    return load(plugins_in_argv(sys.argv if argv is None else argv))
  except PluginError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


def define_plugin_flag() -> flags.FlagHolder:
  """`--plugin` (repeatable), defined on first use (several binaries may share a process)."""
  if FLAG in flags.FLAGS:
    return flags.FlagHolder(flags.FLAGS, flags.FLAGS[FLAG])
  return flags.DEFINE_multi_string(
      FLAG, [], 'Module to import before the flags are parsed, e.g. my_package.my_module: its '
      'tff_lab.tasks/algorithms/aggregators.register calls add tasks, algorithms, aggregators '
      'and their flags (repeatable; recorded in config.json).')
