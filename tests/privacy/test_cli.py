"""tff-lab-dp prints the accountant's ε and noise multiplier, and refuses bad input with exit 2."""

import re
import subprocess
import sys

from absl import flags
import pytest

from tff_lab.privacy import accounting
from tff_lab.privacy import cli


def _run(args):
  fv = flags.FlagValues()
  cli.define_flags(fv)
  argv = fv(['tff-lab-dp'] + args)
  return cli.run(argv, fv)


def _number(text, name):
  return float(re.search(rf'(?<![a-z_]){name}=([0-9.e+-]+)', text).group(1))


def test_epsilon_command(capsys):
  assert _run(['epsilon', '--noise_multiplier=1.2', '--clients_per_round=10',
               '--population=200', '--rounds=40', '--sampling=poisson']) == 0
  out = capsys.readouterr().out
  expected = accounting.epsilon(1.2, 10, 200, 40, 200**-1.1, sampling='poisson')
  assert _number(out, 'epsilon') == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize('sampling', ['fixed', 'poisson'])
def test_epsilon_prints_its_convention_beside_the_others(sampling, capsys):
  z, m, n, rounds = 1.0, 10, 1000, 50
  assert _run(['epsilon', f'--noise_multiplier={z}', f'--clients_per_round={m}',
               f'--population={n}', f'--rounds={rounds}', f'--sampling={sampling}']) == 0
  lines = capsys.readouterr().out.splitlines()
  delta = n**-1.1
  used = accounting.Accounting(sampling, 'rdp', delta, m, n)
  assert lines[1].startswith('  epsilon=') and used.text() in lines[1]
  assert _number(lines[1], 'epsilon') == pytest.approx(
      accounting.epsilon(z, m, n, rounds, delta, sampling=sampling), rel=1e-5)
  others = [line for line in lines if 'other_epsilon=' in line]
  assert len(others) == 2
  for line in others:
    other_sampling, other_accountant = re.search(r'sampling=(\w+) accountant=(\w+)', line).groups()
    assert (other_sampling, other_accountant) != (sampling, 'rdp')
    assert accounting.Accounting(other_sampling, other_accountant, delta, m, n).text() in line
    assert _number(line, 'other_epsilon') == pytest.approx(accounting.epsilon(
        z, m, n, rounds, delta, accountant=other_accountant, sampling=other_sampling), rel=1e-5)
  pld = accounting.epsilon(z, m, n, rounds, delta, accountant='pld', sampling='poisson')
  rdp = accounting.epsilon(z, m, n, rounds, delta, sampling='poisson')
  assert f'PLD {1 - pld / rdp:.0%} below RDP' in '\n'.join(lines)


def _first_line_epsilons(line):
  """The two ε of the first line, in the order printed (the one asked for first)."""
  return [float(x) for x in re.findall(r'ε = ([0-9.e+-]+)', line)]


_WORDS = {'fixed': "a fixed {m} of {n} clients per round (tff-lab-run's default sampling)",
          'poisson': 'Poisson sampling at rate {q:g} (tff-lab-run --client_sampling=poisson)'}


@pytest.mark.parametrize('sampling, accountant, other_accountant', [
    ('fixed', 'rdp', 'rdp'),
    ('poisson', 'rdp', 'rdp'),
    ('poisson', 'pld', 'rdp'),  # PLD has no fixed-size bound: the other figure is RDP's
])
def test_epsilon_first_line_gives_both_samplings_in_words(sampling, accountant, other_accountant,
                                                          capsys):
  z, m, n, rounds = 1.0, 10, 1000, 50
  assert _run(['epsilon', f'--noise_multiplier={z}', f'--clients_per_round={m}',
               f'--population={n}', f'--rounds={rounds}', f'--sampling={sampling}',
               f'--accountant={accountant}']) == 0
  first = capsys.readouterr().out.splitlines()[0]
  other = 'poisson' if sampling == 'fixed' else 'fixed'
  delta = n**-1.1
  used_eps = accounting.epsilon(z, m, n, rounds, delta, accountant=accountant, sampling=sampling)
  other_eps = accounting.epsilon(z, m, n, rounds, delta, accountant=other_accountant,
                                 sampling=other)
  assert used_eps != pytest.approx(other_eps, rel=0.1)  # the two figures can be told apart
  assert _first_line_epsilons(first) == [pytest.approx(used_eps, rel=5e-3),
                                         pytest.approx(other_eps, rel=5e-3)]
  used_words, other_words = (_WORDS[s].format(m=m, n=n, q=m / n) for s in (sampling, other))
  assert first.startswith(f'ε = ') and f'with {used_words}; with {other_words} ε = ' in first
  assert f'{rounds} rounds' in first and f'δ = {delta:.3g}' in first
  assert accountant.upper() in first and other_accountant.upper() in first


@pytest.mark.parametrize('sampling', ['fixed', 'poisson'])
def test_noise_first_line_gives_the_multiplier_and_its_epsilon_under_both_samplings(sampling,
                                                                                    capsys):
  target, m, n, rounds, delta = 4.0, 10, 200, 40, 1e-5
  assert _run(['noise', f'--target_epsilon={target}', f'--clients_per_round={m}',
               f'--population={n}', f'--rounds={rounds}', f'--delta={delta}',
               f'--sampling={sampling}']) == 0
  first = capsys.readouterr().out.splitlines()[0]
  z = float(re.match(r'noise_multiplier = ([0-9.e+-]+) gives ', first).group(1))
  used_eps = accounting.epsilon(z, m, n, rounds, delta, sampling=sampling)
  assert used_eps == pytest.approx(target, rel=1e-3)  # the multiplier printed meets the target
  other = 'poisson' if sampling == 'fixed' else 'fixed'
  other_eps = accounting.epsilon(z, m, n, rounds, delta, sampling=other)
  assert used_eps != pytest.approx(other_eps, rel=0.1)
  assert _first_line_epsilons(first) == [pytest.approx(used_eps, rel=5e-3),
                                         pytest.approx(other_eps, rel=5e-3)]
  used_words, other_words = (_WORDS[s].format(m=m, n=n, q=m / n) for s in (sampling, other))
  assert (f'with {used_words}; with {other_words} the same noise multiplier gives ε = '
          in first)


@pytest.mark.parametrize('value, text', [(5.70378, '5.70'), (0.773767, '0.774'),
                                         (47.9656, '48.0'), (123.4, '123'), (0.0, '0.00')])
def test_format_epsilon_keeps_three_significant_digits(value, text):
  assert cli.format_epsilon(value) == text


def test_epsilon_warns_on_large_delta_and_epsilon(capsys):
  assert _run(['epsilon', '--noise_multiplier=0.5', '--clients_per_round=5', '--population=20',
               '--rounds=15', '--delta=0.06']) == 0
  err = capsys.readouterr().err.splitlines()
  assert len(err) == 2 and all(line.startswith('warning: ') for line in err)
  assert '1/N' in err[0] and 'epsilon=' in err[1]


def test_noise_command_inverts_epsilon(capsys):
  assert _run(['noise', '--target_epsilon=3', '--clients_per_round=10', '--population=200',
               '--rounds=40', '--delta=1e-5', '--sampling=poisson', '--accountant=rdp']) == 0
  z = _number(capsys.readouterr().out, 'noise_multiplier')
  assert accounting.epsilon(z, 10, 200, 40, 1e-5, sampling='poisson') == pytest.approx(3, rel=1e-3)


@pytest.mark.parametrize('args', [
    [],
    ['budget'],
    ['epsilon', '--clients_per_round=10', '--population=200', '--rounds=40'],
    ['epsilon', '--noise_multiplier=0', '--clients_per_round=10', '--population=200',
     '--rounds=40'],
    ['epsilon', '--noise_multiplier=1', '--clients_per_round=300', '--population=200',
     '--rounds=40'],
    ['epsilon', '--noise_multiplier=1', '--clients_per_round=10', '--population=200',
     '--rounds=40', '--delta=2'],
    ['epsilon', '--noise_multiplier=1', '--clients_per_round=10', '--population=0',
     '--rounds=40'],
    ['noise', '--target_epsilon=-1', '--clients_per_round=10', '--population=200', '--rounds=40'],
    ['epsilon', '--noise_multiplier=1', '--clients_per_round=10', '--population=200',
     '--rounds=40', '--accountant=pld'],
])
def test_bad_input_is_one_line_and_exit_2(args, capsys):
  assert _run(args) == 2
  err = capsys.readouterr().err
  assert err.startswith('error: ') and err.count('\n') == 1


def test_module_entry_point():
  done = subprocess.run(
      [sys.executable, '-m', 'tff_lab.privacy.cli', 'epsilon', '--noise_multiplier=1',
       '--clients_per_round=10', '--population=100', '--rounds=60', '--delta=1e-5'],
      capture_output=True, text=True, timeout=120, check=False)
  assert done.returncode == 0, done.stderr
  assert _number(done.stdout, 'epsilon') == pytest.approx(
      accounting.epsilon(1.0, 10, 100, 60, 1e-5), rel=1e-5)
