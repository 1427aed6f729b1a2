"""`tff-lab-dp`: ε of DP-FedAvg for given settings, or the noise multiplier for a target ε.

    tff-lab-dp epsilon --noise_multiplier=1.0 --clients_per_round=10 --population=100 --rounds=60
    tff-lab-dp noise --target_epsilon=5 --clients_per_round=10 --population=100 --rounds=60

δ defaults to population^-1.1 (McMahan et al., ICLR 2018, arXiv:1710.06963). Sampling defaults
to what tff-lab-run does by default (a fixed number of clients per round, uniformly without
replacement); `--sampling=poisson` gives the figures of a run with `--client_sampling=poisson`
and of papers that assume Poisson sampling. The accounting is
`tff_lab.privacy.accounting` (dp-accounting's RDP or PLD accountant).

The first line says, in words, the figure asked for, the sampling it assumes and, beside it, the
ε of the same noise multiplier under the other sampling, so that a fixed-size figure is never
mistaken for a Poisson one or the reverse. For McMahan et al.'s z=1, m=100, N=10^5, T=1000
(`epsilon --noise_multiplier=1 --clients_per_round=100 --population=100000 --rounds=1000`), in
one line:

    ε = 5.70 with a fixed 100 of 100000 clients per round (tff-lab-run's default sampling); with
    Poisson sampling at rate 0.001 (tff-lab-run --client_sampling=poisson) ε = 0.774 (1000
    rounds, δ = 3.16e-06, RDP accountant)

The lines below it give the figure to full precision with its convention (adjacency, sampling,
accountant, δ) and the ε under every other convention, labelled `other_epsilon=` (in the
example, Poisson with PLD: 0.167). Warnings about δ ≥ 1/N, large δ or ε > 10 follow on stderr
(`accounting.dp_warnings`).

Exit codes: 0 success, 2 invalid input (one line on stderr).
"""

import sys

from absl import app
from absl import flags

from tff_lab.privacy import accounting

COMMANDS = ('epsilon', 'noise')
OTHER_SAMPLING = {'fixed': 'poisson', 'poisson': 'fixed'}


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


def format_epsilon(value: float) -> str:
  """ε to 3 significant digits, as a person reads it (5.70, 0.774, 12.3, 123)."""
  return f'{value:#.3g}'.rstrip('.')


def sampling_words(sampling: str, clients_per_round: int, population: int) -> str:
  """The sampling scheme in plain words, with the tff-lab-run setting that samples that way."""
  if sampling == 'fixed':
    return (f'a fixed {clients_per_round} of {population} clients per round '
            '(tff-lab-run\'s default sampling)')
  return (f'Poisson sampling at rate {clients_per_round / population:.3g} '
          '(tff-lab-run --client_sampling=poisson)')


def first_line(command: str, noise_multiplier: float, used: accounting.Accounting,
               used_epsilon: float, other: accounting.Accounting, other_epsilon: float,
               rounds: int) -> str:
  """The result in words: the figure under `used`'s sampling, and the ε under `other`'s."""
  m, n = used.clients_per_round, used.population
  if used.accountant == other.accountant:
    accountants = f'{used.accountant.upper()} accountant'
  else:
    accountants = (f'{used.accountant.upper()} accountant; {other.accountant.upper()} for '
                   f'{other.sampling} sampling')
  context = f'({rounds} rounds, δ = {used.delta:.3g}, {accountants})'
  used_words = sampling_words(used.sampling, m, n)
  other_words = sampling_words(other.sampling, m, n)
  if command == 'epsilon':
    return (f'ε = {format_epsilon(used_epsilon)} with {used_words}; with {other_words} '
            f'ε = {format_epsilon(other_epsilon)} {context}')
  return (f'noise_multiplier = {noise_multiplier:.6g} gives ε = {format_epsilon(used_epsilon)} '
          f'with {used_words}; with {other_words} the same noise multiplier gives '
          f'ε = {format_epsilon(other_epsilon)} {context}')


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
    # The other sampling, with the same accountant where dp-accounting has it (PLD: Poisson only).
    other_sampling = OTHER_SAMPLING[fv.sampling]
    other_accountant = fv.accountant if other_sampling == 'poisson' else 'rdp'
    other, other_value = next(
        (conv, eps) for conv, eps in conventions
        if (conv.sampling, conv.accountant) == (other_sampling, other_accountant))
    others = [(conv, eps) for conv, eps in conventions
              if (conv.sampling, conv.accountant) != (used.sampling, used.accountant)]
    poisson = {conv.accountant: eps for conv, eps in conventions if conv.sampling == 'poisson'}
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(first_line(argv[1], z, used, value, other, other_value, fv.rounds))
  print(f'  {result} ({fv.rounds} rounds; {used.text()})')
  if argv[1] == 'noise':
    print(f'    which gives epsilon={value:.6g} under that convention')
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
