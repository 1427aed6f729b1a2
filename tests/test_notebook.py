"""Executes notebooks/01_quickstart.ipynb headless and checks what it shows.

The notebook runs in a `python3` kernel on *this* interpreter (the venv): the test writes a
temporary kernelspec whose argv starts with `sys.executable` and puts it first on JUPYTER_PATH, so
a user-level or system `python3` kernel of another Python cannot be picked up. Any cell that raises
fails the test (nbclient's CellExecutionError). The TFF worker_binary the kernel starts must not
outlive the kernel.
"""

import copy
import json
import os
import pathlib
import re
import sys
import time

import nbclient
import nbformat
import pytest

NOTEBOOK = pathlib.Path(__file__).resolve().parents[1] / 'notebooks' / '01_quickstart.ipynb'
CELL_TIMEOUT_SECONDS = 600
_PROBE_TAG = 'tff_lab-test-probe'
_FINAL_ACCURACY = re.compile(r'final federated accuracy: (\S+)')


@pytest.fixture
def venv_kernel(tmp_path, monkeypatch):
  """A `python3` kernelspec running this interpreter, first on JUPYTER_PATH."""
  spec_dir = tmp_path / 'jupyter' / 'kernels' / 'python3'
  spec_dir.mkdir(parents=True)
  (spec_dir / 'kernel.json').write_text(json.dumps({
      'argv': [sys.executable, '-m', 'ipykernel_launcher', '-f', '{connection_file}'],
      'display_name': 'Python 3 (tff_lab venv, test)',
      'language': 'python',
  }))
  monkeypatch.setenv('JUPYTER_PATH', str(tmp_path / 'jupyter'))
  # The notebook writes its experiment under tempfile.mkdtemp(); keep that inside tmp_path.
  (tmp_path / 'tmp').mkdir()
  monkeypatch.setenv('TMPDIR', str(tmp_path / 'tmp'))
  return 'python3'


def _stream_text(cell) -> str:
  return ''.join(o.get('text', '') for o in cell.get('outputs', []) if o.output_type == 'stream'
                 and o.get('name') == 'stdout')


def _pid_alive(pid: int) -> bool:
  try:
    with open(f'/proc/{pid}/stat') as f:
      state = f.read().rsplit(')', 1)[1].split()[0]
    return state != 'Z'
  except FileNotFoundError:
    return False


def test_quickstart_notebook_runs(venv_kernel):
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(notebook)
  for cell in notebook.cells:
    if cell.cell_type == 'code':
      assert not cell.get('outputs') and cell.get('execution_count') is None, (
          'store the notebook without outputs')

  # Probe cell appended to the in-memory copy only: which interpreter ran, and which worker
  # processes the kernel started (so we can check they die with it).
  executed = copy.deepcopy(notebook)
  probe = nbformat.v4.new_code_cell(
      'import sys, tff_lab.runtime\n'
      'print("PROBE", sys.executable, '
      '",".join(str(w.pid) for w in tff_lab.runtime.live_workers()))',
      metadata={'tags': [_PROBE_TAG]})
  executed.cells.append(probe)

  client = nbclient.NotebookClient(
      executed, timeout=CELL_TIMEOUT_SECONDS, kernel_name=venv_kernel,
      resources={'metadata': {'path': str(NOTEBOOK.parent)}})
  started = time.perf_counter()
  client.execute()  # raises nbclient.exceptions.CellExecutionError if any cell fails
  elapsed = time.perf_counter() - started
  print(f'notebook executed in {elapsed:.1f}s')

  # The kernel was this venv's interpreter.
  probe_out = _stream_text(executed.cells[-1]).split()
  assert probe_out[0] == 'PROBE', probe_out
  assert os.path.realpath(probe_out[1]) == os.path.realpath(sys.executable), probe_out
  worker_pids = [int(p) for p in probe_out[2].split(',')] if len(probe_out) > 2 else []

  cells = [c for c in executed.cells if c.cell_type == 'code'
           and _PROBE_TAG not in c.metadata.get('tags', [])]
  for cell in cells:
    for output in cell.get('outputs', []):
      assert output.output_type != 'error', output

  # The printed final federated accuracy is a number in [0, 1].
  text = '\n'.join(_stream_text(c) for c in cells)
  match = _FINAL_ACCURACY.search(text)
  assert match, 'notebook did not print "final federated accuracy: ..."'
  accuracy = float(match.group(1))
  assert 0.0 <= accuracy <= 1.0, accuracy

  # The last code cell shows the learning curves as an inline PNG.
  last = cells[-1]
  assert any(o.output_type == 'display_data' and 'image/png' in o.get('data', {})
             for o in last.get('outputs', [])), 'last cell produced no inline PNG plot'

  # No worker_binary started by the kernel survives it (the kernel is shut down by execute()).
  deadline = time.monotonic() + 15
  while any(_pid_alive(p) for p in worker_pids) and time.monotonic() < deadline:
    time.sleep(0.2)
  survivors = [p for p in worker_pids if _pid_alive(p)]
  assert not survivors, f'worker_binary processes outlived the kernel: {survivors}'


_SERIES = sorted(p for p in NOTEBOOK.parent.glob('[0-9][0-9]_*.ipynb') if p != NOTEBOOK)


@pytest.mark.parametrize('path', _SERIES, ids=[p.stem for p in _SERIES])
def test_series_notebook_runs_and_its_own_checks_pass(venv_kernel, path):
  """Every other notebook of the series ends with a cell asserting what its runs must show
  (finite losses, the quantities it explains) and printing 'checks passed'; a failing assert
  is a failing cell."""
  notebook = nbformat.read(path, as_version=4)
  nbformat.validate(notebook)
  client = nbclient.NotebookClient(notebook, timeout=CELL_TIMEOUT_SECONDS,
                                   kernel_name=venv_kernel,
                                   resources={'metadata': {'path': str(path.parent)}})
  client.execute()  # raises CellExecutionError if any cell, the checks included, fails
  code = [c for c in notebook.cells if c.cell_type == 'code']
  assert 'assert ' in code[-1].source, f'{path.name}: its last code cell should check its runs'
  assert 'checks passed' in _stream_text(code[-1]), _stream_text(code[-1])
