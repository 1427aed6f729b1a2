"""Learning curves from metrics.csv: loss and accuracy against round, one PNG."""

import csv

# A Figure of its own per plot, not pyplot: the global backend stays what the user (e.g. a
# notebook's inline backend) chose.
from matplotlib import figure

_SERIES = (
    ('loss', (('train_loss', 'train (clients, during the round)'),
              ('fed_eval_loss', 'federated eval (test clients)'),
              ('central_eval_loss', 'centralised eval (pooled test set)'))),
    ('accuracy', (('train_accuracy', 'train (clients, during the round)'),
                  ('fed_eval_accuracy', 'federated eval (test clients)'),
                  ('central_eval_accuracy', 'centralised eval (pooled test set)'),
                  ('fed_eval_client_accuracy_p10', 'per-client accuracy, 10th pct'),
                  ('fed_eval_client_accuracy_p90', 'per-client accuracy, 90th pct'))),
)


# Per series: line style and marker, so that curves that coincide (federated and centralised
# evaluation do when the test clients pool to the centralised test set) stay distinguishable.
_STYLES = {'train': ('-', 'o'), 'fed_eval': ('-', 's'), 'central_eval': ('--', 'x'),
           'pct': (':', None)}


def _style(column: str) -> tuple[str, str]:
  if column.startswith('fed_eval_client'):
    return _STYLES['pct']
  return next(v for k, v in _STYLES.items() if column.startswith(k))


def plot_curves(csv_path: str, png_path: str, title: str = '') -> None:
  """Plots the loss and accuracy columns present in `csv_path` into `png_path`.

  Each subplot's legend sits below it, outside the data; coinciding series differ in line style
  and marker (centralised evaluation dashed with crosses over federated evaluation's squares).
  """
  with open(csv_path, newline='') as f:
    rows = list(csv.DictReader(f))
  fig = figure.Figure(figsize=(11, 5))
  axes = fig.subplots(1, 2)
  for ax, (ylabel, series) in zip(axes, _SERIES):
    for column, label in series:
      points = [(int(r['round']), float(r[column])) for r in rows if r.get(column)]
      if points:
        xs, ys = zip(*points)
        line, marker = _style(column)
        ax.plot(xs, ys, line, marker=marker if len(xs) < 30 else None, markerfacecolor='none',
                label=label)
    ax.set_xlabel('round')
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.lines:
      ax.legend(fontsize=8, loc='upper center', bbox_to_anchor=(0.5, -0.16), ncol=2,
                frameon=False)
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(png_path, dpi=100, bbox_inches='tight')
