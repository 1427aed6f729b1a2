"""Heterogeneity report of a task's training clients: sizes, label histograms, skew, plots.

Quantifies two of the non-IID regimes of Kairouz et al., "Advances and Open Problems in Federated
Learning", FnTML 2021 (arXiv:1912.04977), §3.1: quantity skew (the distribution of client sizes)
and label distribution skew, summarised as the mean total-variation distance between each
client's label distribution p_k and the pooled one p,

    TV(p_k, p) = ½ Σ_l |p_k(l) − p(l)|  ∈ [0, 1],

0 when every client has the global label mix and close to 1 when clients hold disjoint labels
(e.g. Dirichlet label skew with small α, Hsu et al. 2019, arXiv:1909.06335).

What counts as a label follows the task's `prediction_kind`: the class (`sparse_categorical`,
`binary`, `sign`); the target tokens of next-token tasks (`next_token`, padding id 0 excluded),
pooled into the `top_k_tokens` most frequent plus one `other` column; the tags present
(`multi_label`, a post with several tags counts once per tag). Sizes count the task's examples as
training sees them (e.g. 80-character windows for Shakespeare).
"""

import collections
import json
import os
from typing import Any, Optional

import matplotlib
import numpy as np

from tff_lab.metrics import accuracy as accuracy_lib
from tff_lab.tasks import task as task_lib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
from matplotlib import ticker  # pylint: disable=g-import-not-at-top,wrong-import-position

OTHER = 'other'


def _label_occurrences(y: np.ndarray, kind: str) -> dict:
  """Maps each label in a batch of targets to its number of occurrences."""
  if kind in ('sparse_categorical', 'binary', 'sign'):
    values, counts = np.unique(y.reshape(len(y), -1)[:, 0], return_counts=True)
  elif kind == 'next_token':
    values, counts = np.unique(y[y != accuracy_lib.PAD_TOKEN], return_counts=True)
  elif kind == 'multi_label':
    sums = np.asarray(y).reshape(len(y), -1).sum(axis=0)
    values = np.flatnonzero(sums)
    counts = sums[values]
  else:
    raise ValueError(f'data stats: unsupported prediction_kind {kind!r}')
  return {v.item(): int(round(c)) for v, c in zip(values, counts)}


def client_label_counts(task: task_lib.Task, client_ids) -> tuple[np.ndarray, list[dict]]:
  """Each client's number of training examples and label occurrences (`{label: count}`)."""
  sizes, counts = [], []
  for cid in client_ids:
    size, occurrences = 0, collections.Counter()
    for batch in task.train_data.create_tf_dataset_for_client(cid).batch(1024).as_numpy_iterator():
      size += len(batch['y'])
      occurrences.update(_label_occurrences(batch['y'], task.prediction_kind))
    sizes.append(size)
    counts.append(dict(occurrences))
  return np.array(sizes, dtype=np.int64), counts


def _label_matrix(counts: list[dict], kind: str, top_k_tokens: int) -> tuple[list, np.ndarray]:
  """Columns (labels) and the [clients, labels] count matrix."""
  total = collections.Counter()
  for c in counts:
    total.update(c)
  if kind == 'next_token' and len(total) > top_k_tokens:
    labels = sorted(label for label, _ in total.most_common(top_k_tokens))
    matrix = np.array([[c.get(label, 0) for label in labels] + [sum(c.values())] for c in counts])
    matrix[:, -1] -= matrix[:, :-1].sum(axis=1)
    return labels + [OTHER], matrix
  labels = sorted(total)
  return labels, np.array([[c.get(label, 0) for label in labels] for c in counts])


def total_variation(counts: np.ndarray) -> np.ndarray:
  """TV distance of each row's distribution from the pooled one (rows with no labels: NaN)."""
  counts = np.asarray(counts, dtype=np.float64)
  row_totals = counts.sum(axis=1, keepdims=True)
  with np.errstate(invalid='ignore', divide='ignore'):
    rows = counts / row_totals
  pooled = counts.sum(axis=0) / counts.sum()
  return 0.5 * np.abs(rows - pooled).sum(axis=1)


def compute_stats(task: task_lib.Task, output_dir: Optional[str] = None, max_clients: int = 0,
                  heatmap_clients: int = 30, top_k_tokens: int = 50, seed: int = 0
                  ) -> 'collections.OrderedDict[str, Any]':
  """Computes the report and, if `output_dir` is set, writes stats.json and two PNGs there.

  Args:
    task: The task; its training clients are analysed.
    output_dir: Where to write `stats.json`, `client_sizes.png` and `label_heatmap.png`.
    max_clients: Analyse a random sample of this many clients (0: all).
    heatmap_clients: Clients (a random sample of those analysed) shown in the heatmap.
    top_k_tokens: Token columns kept for next-token tasks (the rest pooled as `other`).
    seed: Seed of both samples.

  Returns:
    The report: client counts, size distribution, label columns, per-client sizes, label counts
    and TV distances, the skew summary, and the paths of the files written.

  Raises:
    ValueError: For a negative `max_clients` or non-positive `heatmap_clients`/`top_k_tokens`.
  """
  for name, value, low in (('max_clients', max_clients, 0),
                           ('heatmap_clients', heatmap_clients, 1),
                           ('top_k_tokens', top_k_tokens, 1)):
    if value < low:
      raise ValueError(f'{name} must be >= {low}, got {value}')
  rng = np.random.default_rng(seed)
  all_ids = sorted(task.train_data.client_ids)
  ids = all_ids
  if 0 < max_clients < len(all_ids):
    ids = sorted(rng.choice(all_ids, max_clients, replace=False).tolist())
  sizes, occurrences = client_label_counts(task, ids)
  labels, counts = _label_matrix(occurrences, task.prediction_kind, top_k_tokens)
  tv = total_variation(counts)
  labelled = ~np.isnan(tv)
  if not labelled.any():
    raise ValueError(f'task {task.name!r}: no analysed client has any label')

  stats = collections.OrderedDict(
      task=task.name, description=task.description, prediction_kind=task.prediction_kind,
      num_clients=len(all_ids), num_clients_analyzed=len(ids), num_examples=int(sizes.sum()),
      client_size=collections.OrderedDict(
          min=int(sizes.min()), median=float(np.median(sizes)), mean=float(sizes.mean()),
          max=int(sizes.max()), std=float(sizes.std())),
      skew=collections.OrderedDict(
          measure='mean over clients of TV(p_k, p) = 1/2 sum_l |p_k(l) - p(l)|',
          mean_tv_distance=float(tv[labelled].mean()),
          median_tv_distance=float(np.median(tv[labelled])),
          max_tv_distance=float(tv[labelled].max()),
          clients_without_labels=int((~labelled).sum())),
      labels=labels, label_names=_names(labels, task.label_names),
      global_label_counts=counts.sum(axis=0).tolist(),
      clients=collections.OrderedDict(
          (cid, collections.OrderedDict(size=int(n), label_counts=row.tolist(),
                                        tv_distance=None if np.isnan(d) else float(d)))
          for cid, n, row, d in zip(ids, sizes, counts, tv)))
  if output_dir:
    os.makedirs(output_dir, exist_ok=True)
    shown = np.sort(rng.choice(len(ids), min(heatmap_clients, len(ids)), replace=False))
    stats['files'] = collections.OrderedDict(
        stats_json=os.path.join(output_dir, 'stats.json'),
        client_sizes_png=os.path.join(output_dir, 'client_sizes.png'),
        label_heatmap_png=os.path.join(output_dir, 'label_heatmap.png'))
    _plot_sizes(sizes, task.name, stats['files']['client_sizes_png'])
    sample = (f'a random sample (seed {seed}) of {len(shown)} of the {len(ids)} clients analysed'
              if len(shown) < len(ids) else f'all {len(ids)} clients analysed')
    if len(ids) < len(all_ids):
      sample += f' (of {len(all_ids)})'
    stats['heatmap_clients'] = [ids[i] for i in shown]
    _plot_heatmap(counts[shown], [ids[i] for i in shown], stats['label_names'],
                  f'{task.name}: label distribution of {sample}',
                  stats['files']['label_heatmap_png'])
    with open(stats['files']['stats_json'], 'w') as f:
      json.dump(stats, f, indent=1)
  return stats


def format_summary(stats) -> str:
  """A few readable lines summarising `compute_stats`' report."""
  size, skew = stats['client_size'], stats['skew']
  sampled = (f' ({stats["num_clients_analyzed"]} analysed)'
             if stats['num_clients_analyzed'] != stats['num_clients'] else '')
  lines = [
      f'{stats["task"]}: {stats["description"]}',
      f'clients: {stats["num_clients"]}{sampled}, examples: {stats["num_examples"]}',
      f'client size: min {size["min"]}, median {size["median"]:g}, mean {size["mean"]:.1f}, '
      f'max {size["max"]}, std {size["std"]:.1f}',
      f'labels: {len(stats["labels"])} columns ({stats["prediction_kind"]})',
      f'label skew: mean TV distance from the global label distribution '
      f'{skew["mean_tv_distance"]:.3f} (median {skew["median_tv_distance"]:.3f}, '
      f'max {skew["max_tv_distance"]:.3f})',
  ]
  shown = stats.get('heatmap_clients')
  if shown is not None and len(shown) < stats['num_clients_analyzed']:
    lines.append(f'heatmap: a random sample of {len(shown)} of the {stats["num_clients_analyzed"]} '
                 'clients analysed (their ids: stats.json "heatmap_clients")')
  if 'files' in stats:
    lines.append('wrote: ' + ', '.join(stats['files'].values()))
  return '\n'.join(lines)


def _names(labels: list, names) -> list[str]:
  """How each label column reads: the task's name for the id, else the id itself."""
  names = names or {}
  return [label if label == OTHER else str(names.get(label, label)) for label in labels]


def _plot_sizes(sizes: np.ndarray, title: str, path: str) -> None:
  fig, ax = plt.subplots(figsize=(6, 4))
  ax.hist(sizes, bins=min(50, max(1, len(np.unique(sizes)))))
  ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))  # counts: integer ticks
  ax.yaxis.set_major_locator(ticker.MaxNLocator(integer=True))
  ax.set_xlabel('examples per client')
  ax.set_ylabel('clients')
  ax.set_title(f'{title}: client sizes ({len(sizes)} clients)', fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _plot_heatmap(counts: np.ndarray, client_ids: list, labels: list, title: str,
                  path: str) -> None:
  totals = counts.sum(axis=1, keepdims=True)
  proportions = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
  fig, ax = plt.subplots(figsize=(min(16, 4 + 0.2 * len(labels)),
                                  min(12, 2 + 0.25 * len(client_ids))))
  image = ax.imshow(proportions, aspect='auto', cmap='viridis', vmin=0.0)
  step = max(1, len(labels) // 30)
  ax.set_xticks(range(0, len(labels), step))
  ax.set_xticklabels([str(labels[i]) for i in range(0, len(labels), step)], rotation=90,
                     fontsize=7)
  ax.set_yticks(range(len(client_ids)))
  ax.set_yticklabels(client_ids, fontsize=6)
  ax.set_xlabel('label')
  ax.set_ylabel('client')
  ax.set_title(title, fontsize=10)
  fig.colorbar(image, ax=ax, label='fraction of the client\'s labels')
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
