"""`tff-lab-reproduce`: bad input is one line and exit 2; a second invocation reuses the runs."""

import json
import os
import shutil

import pytest

from tff_lab import baselines


def _exit_code_and_stderr(run_cli, argv, capsys):
  with pytest.raises(SystemExit) as e:
    run_cli(argv)
  return e.value.code, capsys.readouterr().err.strip()


def test_unknown_paper(run_cli, capsys):
  code, err = _exit_code_and_stderr(run_cli, ['no_such_paper'], capsys)
  assert code == 2 and err == ('error: unknown paper \'no_such_paper\'; known papers: '
                               + ', '.join(baselines.paper_names()))
  assert 'fedprox' in err  # the list is the registry's, not empty


def test_missing_paper(run_cli, capsys):
  code, err = _exit_code_and_stderr(run_cli, [], capsys)
  assert code == 2 and err.startswith('error: usage: tff-lab-reproduce <paper>')


def test_unknown_claim(run_cli, capsys, tmp_path):
  code, err = _exit_code_and_stderr(run_cli, ['seed_article', '--claims=fedsgd_equals_gd,bogus',
                                     f'--output_dir={tmp_path}'], capsys)
  assert code == 2 and '\n' not in err
  assert "unknown claim(s) ['bogus']" in err and 'known claims: fedsgd_equals_gd' in err
  assert not os.listdir(tmp_path)  # refused before anything was written


def _mtimes(root):
  out = {}
  for directory, _, files in os.walk(os.path.join(root, 'runs')):
    for name in files:
      if name.endswith(('.npz', 'metrics.csv', 'final_model.keras')):
        path = os.path.join(directory, name)
        out[path] = os.stat(path).st_mtime_ns
  return out


def test_second_invocation_reuses_the_finished_runs(run_cli, seed_article_quick, capsys):
  before = _mtimes(seed_article_quick)
  assert any(p.endswith('.npz') for p in before)
  capsys.readouterr()
  run_cli(['seed_article', '--quick', f'--output_dir={seed_article_quick}',
                    '--noprogress'])
  out = capsys.readouterr().out
  assert '0 runs trained, 1 reused' in out
  assert _mtimes(seed_article_quick) == before  # no checkpoint or metrics row was rewritten
  assert '- `iid_seed0` (reused)' in (seed_article_quick / 'report.md').read_text()


def test_output_dir_of_other_settings_is_refused(run_cli, seed_article_quick, capsys):
  code, err = _exit_code_and_stderr(
      run_cli, ['seed_article', f'--output_dir={seed_article_quick}'], capsys)
  assert code == 2 and '\n' not in err
  assert 'holds runs from other settings (quick: saved True, given False' in err


def test_run_with_a_changed_config_is_refused(run_cli, seed_article_quick, tmp_path, capsys):
  out = tmp_path / 'copy'
  shutil.copytree(seed_article_quick, out)
  path = out / 'runs' / 'iid_seed0' / 'config.json'
  saved = json.loads(path.read_text())
  saved['server_learning_rate'] = 0.3
  path.write_text(json.dumps(saved))
  code, err = _exit_code_and_stderr(run_cli, ['seed_article', '--quick', f'--output_dir={out}'],
                                    capsys)
  assert code == 2 and '\n' not in err
  assert 'server_learning_rate: saved 0.3, given 0.2' in err
