"""Every `--name` that tff_lab's messages, help and docstrings mention is a flag that exists.

A message that cites a flag the user cannot set (issue #13 part 8: `--dp=adaptive` was refused
citing `clipped_count_stddev`, an internal argument) sends the reader looking for nothing. This
test collects every string constant of tff_lab/**/*.py and experiments/*.py (`ast`, so
docstrings, error messages, warnings and help texts alike), takes each `--name` in them, and
checks it against the flags the console scripts define (setup.py's entry points, plus
experiments/run_grid.py):

* tff-lab-run (`tff_lab.cli`, which defines all its flags at import), tff-lab-compare,
  tff-lab-reproduce, tff-lab-data-stats and run_grid.py define absl flags on the global registry
  at import, and some of them define the same name (`--task`, `--seeds`, `--output_dir`), so
  they cannot be imported into one registry. A subprocess imports them one after the other,
  emptying the global registry in between, and prints each binary's flags; this test's process
  (and every other test's `flags.FLAGS`) is left alone.
* tff-lab-dp defines its flags on a fresh `flags.FlagValues` (`tff_lab.privacy.cli.define_flags`).
* tff-lab-worker uses argparse; its parser's option strings are read.

A name is accepted if some binary defines it (the union: a message is not tied to one binary),
`--noNAME` if NAME is a boolean flag, and a template such as `--client_*`, `--<task>_<option>` or
`--latency_{name}` if some flag starts with its fixed part. The rest must be in `_ALLOWED`, each
with the reason it is not one of ours.
"""

import ast
import json
import os
import pathlib
import re
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent

# `--name` mentions that are not flags of a tff_lab binary, and why they are right as they are.
_ALLOWED = {
    'helpfull': "absl's help flag, defined by app.run (not at import)",
    'h': "tff-lab-run's parse_flags takes --h as --help before absl parses",
    'flag': "the `[--flag=value ...]` placeholder of tff-lab-run's usage line",
    'no': "pip's --no-deps (installation instructions for optional datasets)",
    'short': "git's `rev-parse --short` (the commit recorded with a run)",
    'porcelain': "git's `status --porcelain` (the commit recorded with a run)",
    'untracked': "git's `--untracked-files=no` (the commit recorded with a run)",
    'max_concurrent_computation_calls': "TFF's worker_binary flag, passed by tff-lab-worker",
    'grpc_max_message_length_megabytes': "TFF's worker_binary flag, passed by tff-lab-worker",
    'num_epochs': "the FedProx authors' run_fedprox.sh flag, cited as a hyperparameter's source",
}

_MENTION = re.compile(r'--([a-z][a-z0-9_]*)(.?)')
# A mention followed by one of these is a template for a family of flags.
_TEMPLATE_MARKS = ('*', '<', '{')

# Run as a script (by the test, in a subprocess): prints {binary: [[flag, is_bool], ...]}.
_COLLECT = r'''
import argparse, importlib, json, os, sys
from unittest import mock
sys.path.insert(0, os.path.join(sys.argv[1], 'experiments'))
from absl import flags

out = {}

def record(binary, flag_values=flags.FLAGS):
  out[binary] = [[name, isinstance(flag_values[name], flags.BooleanFlag)] for name in flag_values]

def clear():
  for name in list(flags.FLAGS):
    delattr(flags.FLAGS, name)

importlib.import_module('tff_lab.cli')
record('tff-lab-run')
for binary, module in [('tff-lab-compare', 'tff_lab.compare_cli'),
                       ('tff-lab-reproduce', 'tff_lab.baselines.cli'),
                       ('tff-lab-data-stats', 'tff_lab.data_stats_cli'),
                       ('run_grid.py', 'run_grid')]:
  clear()
  importlib.import_module(module)
  record(binary)

from tff_lab.privacy import cli as dp_cli
dp_flags = flags.FlagValues()
dp_cli.define_flags(dp_flags)
record('tff-lab-dp', dp_flags)

from tff_lab.tuning import cli as tune_cli  # tff-lab-tune: its own FlagValues, too
record('tff-lab-tune', tune_cli.define_flags())

from tff_lab.runtime import worker_cli
with mock.patch.object(argparse.ArgumentParser, 'parse_args', lambda self, *a, **k: self):
  parser = worker_cli._parse_args([])
out['tff-lab-worker'] = [[option[2:], False] for action in parser._actions
                         for option in action.option_strings if option.startswith('--')]
print(json.dumps(out))
'''


def _defined_flags():
  done = subprocess.run([sys.executable, '-c', _COLLECT, str(REPO)], cwd=REPO,
                        capture_output=True, text=True, timeout=120, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  return json.loads(done.stdout.strip().splitlines()[-1])


def _strings(tree):
  """(line, text) of every string constant; an f-string's fields read as `{`."""
  in_fstrings = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.JoinedStr):
      parts = []
      for value in node.values:
        in_fstrings.add(id(value))
        parts.append(value.value if isinstance(value, ast.Constant) else '{')
      yield node.lineno, ''.join(parts)
  for node in ast.walk(tree):
    if (isinstance(node, ast.Constant) and isinstance(node.value, str)
        and id(node) not in in_fstrings):
      yield node.lineno, node.value


def _mentions():
  """(file:line, name, the character after it) of every `--name` in tff_lab's strings."""
  files = sorted((REPO / 'tff_lab').rglob('*.py')) + sorted((REPO / 'experiments').glob('*.py'))
  for path in files:
    tree = ast.parse(path.read_text(encoding='utf-8'), filename=str(path))
    for line, text in _strings(tree):
      for match in _MENTION.finditer(text):
        yield f'{path.relative_to(REPO)}:{line}', match.group(1), match.group(2)


def _unknown(mentions, defined):
  """The mentions (file:line: --name) that no binary defines and `_ALLOWED` does not list."""
  names = {name for flag_list in defined.values() for name, _ in flag_list}
  booleans = {name for flag_list in defined.values() for name, is_bool in flag_list if is_bool}
  unknown = []
  for where, name, after in mentions:
    if name in names or (name.startswith('no') and name[2:] in booleans):
      continue
    if after in _TEMPLATE_MARKS and any(flag.startswith(name) for flag in names):
      continue
    if name not in _ALLOWED:
      unknown.append(f'{where}: --{name}')
  return unknown


def test_every_flag_a_message_names_exists():
  defined = _defined_flags()
  assert set(defined) == {'tff-lab-run', 'tff-lab-compare', 'tff-lab-reproduce',
                          'tff-lab-data-stats', 'run_grid.py', 'tff-lab-dp', 'tff-lab-worker',
                          'tff-lab-tune'}
  names = {name for flag_list in defined.values() for name, _ in flag_list}
  # Each binary's own flags were collected (not only the shared registry's).
  assert {'dp', 'noise_multiplier', 'progress', 'task', 'target_epsilon', 'port', 'grid',
          'heatmap_clients', 'claims', 'output', 'n_trials'} <= names
  mentions = list(_mentions())
  unknown = _unknown(mentions, defined)
  assert not unknown, 'messages name flags no binary defines:\n' + '\n'.join(unknown)
  # The allow-list stays short: no entry that nothing mentions, or that became a real flag.
  assert set(_ALLOWED) <= {name for _, name, _ in mentions}
  assert not set(_ALLOWED) & names


def test_the_check_reports_a_made_up_flag_and_accepts_real_ones_and_templates():
  tree = ast.parse('def f(name):\n'
                   '  raise ValueError("set --clipped_count_stddev, not --noise_multiplier")\n'
                   'HELP = f"--noprogress; --client_{name}; --client_* flags; --server_lr_x"\n')
  mentions = [('m.py', *m.groups()) for _, t in _strings(tree) for m in _MENTION.finditer(t)]
  defined = {'b': [['noise_multiplier', False], ['progress', True], ['client_lr', False],
                   ['task', False]]}
  assert sorted(_unknown(mentions, defined)) == ['m.py: --clipped_count_stddev',
                                                'm.py: --server_lr_x']
