"""The README's Python snippet runs and does what it shows (issue #13 part 9).

It once built an MLP task and a process that `run_experiment` ignored, training the default CNN
into runs/experiment. The test runs the snippet as written, with its round counts made small, in
a temporary directory, and checks the experiment it names trained the model it names.
"""

import json
import os
import re
import subprocess
import sys

REPO = os.path.join(os.path.dirname(__file__), '..', '..')


def _snippet() -> str:
  readme = open(os.path.join(REPO, 'README.md'), encoding='utf-8').read()
  start = readme.index('The core calls:')
  return re.search(r'```python\n(.*?)```', readme[start:], re.DOTALL).group(1)


def test_the_readme_snippet_trains_what_it_shows(tmp_path):
  code = _snippet()
  small = code.replace('rounds=20', 'rounds=2').replace('range(1, 6)', 'range(1, 3)')
  assert small.count('rounds=2') == 1 and 'range(1, 3)' in small, 'the snippet changed: update me'
  result = subprocess.run([sys.executable, '-c', small], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  printed = result.stdout.split()
  assert 0.0 <= float(printed[0]) <= 1.0  # the final centralised accuracy
  losses = [float(v) for v in printed[1:][1::2]]  # "round loss" lines of the manual loop
  assert len(losses) == 2 and all(v > 0 for v in losses)
  exp_dir = tmp_path / 'runs' / 'digits_mlp'
  with open(exp_dir / 'config.json', encoding='utf-8') as f:
    saved = json.load(f)
  assert saved['task_options']['model'] == 'mlp' and saved['task_options']['alpha'] == 0.5
  assert saved['rounds'] == 2 and os.path.exists(exp_dir / 'final_model.keras')
  with open(exp_dir / 'final_model.json', encoding='utf-8') as f:
    card = json.load(f)
  assert card['input_shape'] == [8, 8, 1] and 'divided by 16' in card['input_preprocessing'][
      'description']
