"""`tff-lab-dp`: ε of DP-FedAvg for given settings, or the noise multiplier for a target ε.

    tff-lab-dp epsilon --noise_multiplier=1.0 --clients_per_round=10 --population=100 --rounds=60
    tff-lab-dp noise --target_epsilon=5 --clients_per_round=10 --population=100 --rounds=60

δ defaults to population^-1.1 (McMahan et al., ICLR 2018, arXiv:1710.06963). Sampling defaults
to what tff-lab-run does (a fixed number of clients per round, uniformly without replacement);
`--sampling=poisson` gives the figures of papers that assume Poisson sampling. The accounting is
`tff_lab.privacy.accounting` (dp-accounting's RDP or PLD accountant).

The first line is the figure asked for, with its convention (adjacency, sampling, accountant, δ).
The lines below it give the same noise multiplier's ε under the other conventions, labelled
`other_epsilon=`, so that a fixed-size figure is never mistaken for a Poisson one or the reverse
(for McMahan et al.'s z=1, m=100, N=10^5, T=1000: fixed-size RDP 5.70, Poisson RDP 0.774, Poisson
PLD 0.167). Warnings about δ ≥ 1/N, large δ or ε > 10 follow (`accounting.dp_warnings`).

Exit codes: 0 success, 2 invalid input (one line on stderr).
"""

import sys

from absl import app
from absl import flags

from tff_lab.privacy import accounting

COMMANDS = ('epsilon', 'noise')


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines the flags (on `flag_values`, so tests can use their own FlagValues)."""
  flags.DEFINE_float('noise_multiplier', None, 'z: noise std / clip norm (for `epsilon`).',
                     flag_values=flag_values)
  flags.DEFINE_float('target_epsilon', None, 'Target ε (for `noise`).', flag_values=flag_values)
  flags.DEFINE_integer('clients_per_round', None, 'm: clients sampled per round.',
                       flag_values=flag_values)
  flags.DEFINE_integer('population', None, 'N: clients sampled from.', flag_values=flag_values)
  flags.DEFINE_integer('rounds', None, 'T: rounds.', flag_values=flag_values)
  flags.DEFINE_float('delta', None, 'δ (default population^-1.1).', flag_values=flag_values)
  flags.DEFINE_enum('sampling', 'fixed', accounting.SAMPLING,
                    'fixed: m of N without replacement (tff-lab-run); poisson: rate m/N.',
                    flag_values=flag_values)
  flags.DEFINE_enum('accountant', 'rdp', accounting.ACCOUNTANTS,
                    'rdp, or pld (Poisson sampling only).', flag_values=flag_values)


def run(argv: list[str], flag_values: flags.FlagValues = flags.FLAGS) -> int:
  """Runs the command in argv[1] with parsed `flag_values`; prints the result; the exit code."""
  fv = flag_values
  try:
    if len(argv) != 2 or argv[1] not in COMMANDS:
      raise ValueError(f'expected one command, {" or ".join(COMMANDS)}; got {argv[1:]}')
    needed = ['clients_per_round', 'population', 'rounds',
              'noise_multiplier' if argv[1] == 'epsilon' else 'target_epsilon']
    missing = [f'--{name}' for name in needed if fv[name].value is None]
    if missing:
      raise ValueError(f'{argv[1]} needs {", ".join(missing)}')
    if fv.population < 1:
      raise ValueError(f'population must be a positive integer; got {fv.population}')
    delta = accounting.default_delta(fv.population) if fv.delta is None else fv.delta
    common = dict(clients_per_round=fv.clients_per_round, population=fv.population,
                  rounds=fv.rounds, delta=delta)
    used = accounting.Accounting(fv.sampling, fv.accountant, delta, fv.clients_per_round,
                                 fv.population)
    if argv[1] == 'epsilon':
      z = fv.noise_multiplier
      value = accounting.epsilon(z, accountant=fv.accountant, sampling=fv.sampling, **common)
      result = f'epsilon={value:.6g}'
    else:
      z = accounting.noise_multiplier_for_epsilon(fv.target_epsilon, accountant=fv.accountant,
                                                  sampling=fv.sampling, **common)
      value = accounting.epsilon(z, accountant=fv.accountant, sampling=fv.sampling, **common)
      result = f'noise_multiplier={z:.6g}'
    conventions = accounting.epsilon_conventions(z, **common)
    others = [(conv, eps) for conv, eps in conventions
              if (conv.sampling, conv.accountant) != (used.sampling, used.accountant)]
    poisson = {conv.accountant: eps for conv, eps in conventions if conv.sampling == 'poisson'}
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(f'{result} ({fv.rounds} rounds; {used.text()})')
  if argv[1] == 'noise':
    print(f'  which gives epsilon={value:.6g} under that convention')
  print(f'  the same noise_multiplier={z:.6g} under the other conventions (each applies only to '
        'a run that samples that way):')
  tighter = f'PLD {1 - poisson["pld"] / poisson["rdp"]:.0%} below RDP'
  for conv, eps in others:
    notes = []
    if conv.sampling == 'poisson' and used.sampling != 'poisson':
      notes.append('not tff-lab-run\'s default sampling')
    if conv.sampling == used.sampling == 'poisson' or conv.accountant == 'pld':
      notes.append(tighter)
    note = f' ({"; ".join(notes)})' if notes else ''
    print(f'    sampling={conv.sampling} accountant={conv.accountant}: other_epsilon={eps:.6g}'
          f'{note}; {conv.text()}')
  for warning in accounting.dp_warnings(value, delta, fv.population):
    print(f'warning: {warning}', file=sys.stderr)
  return 0


def run_app() -> None:
  """Console script `tff-lab-dp`."""
  define_flags()
  app.run(lambda argv: sys.exit(run(argv)))


if __name__ == '__main__':
  run_app()
