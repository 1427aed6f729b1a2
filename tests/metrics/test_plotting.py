"""curves.png is drawn from the columns present."""

from tff_lab.metrics import plotting
from tff_lab.metrics import writers


def test_plot_curves_writes_png(tmp_path):
  csv_path = str(tmp_path / 'metrics.csv')
  w = writers.CSVMetricsWriter(csv_path)
  for r in range(1, 6):
    m = {'train_loss': 1.0 / r, 'train_accuracy': 0.1 * r}
    if r % 2 == 0:
      m.update(fed_eval_accuracy=0.1 * r, central_eval_loss=1.0 / r)
    w.write(r, m)
  png = tmp_path / 'curves.png'
  plotting.plot_curves(csv_path, str(png), title='test')
  data = png.read_bytes()
  assert data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) > 5000


def test_coinciding_curves_stay_distinguishable_and_legends_stay_off_the_data(tmp_path,
                                                                              monkeypatch):
  csv_path = str(tmp_path / 'metrics.csv')
  w = writers.CSVMetricsWriter(csv_path)
  for r in range(1, 6):  # federated and centralised evaluation equal, as on digits
    w.write(r, {'train_loss': 1.0 / r, 'train_accuracy': 0.1 * r, 'fed_eval_accuracy': 0.2 * r,
                'central_eval_accuracy': 0.2 * r, 'fed_eval_loss': 0.5 / r,
                'central_eval_loss': 0.5 / r})
  figures = []
  original = plotting.figure.Figure.savefig

  def keep(fig, *args, **kwargs):
    figures.append(fig)
    return original(fig, *args, **kwargs)

  monkeypatch.setattr(plotting.figure.Figure, 'savefig', keep)
  plotting.plot_curves(csv_path, str(tmp_path / 'curves.png'))
  fig, = figures
  from matplotlib.backends import backend_agg  # pylint: disable=g-import-not-at-top
  renderer = backend_agg.FigureCanvasAgg(fig).get_renderer()
  for ax in fig.axes:
    by_label = {line.get_label(): line for line in ax.lines}
    fed = next(l for k, l in by_label.items() if k.startswith('federated'))
    central = next(l for k, l in by_label.items() if k.startswith('centralised'))
    assert list(fed.get_ydata()) == list(central.get_ydata())  # they coincide ...
    assert ((fed.get_linestyle(), fed.get_marker())
            != (central.get_linestyle(), central.get_marker()))  # ... and still look different
    legend = ax.get_legend().get_window_extent(renderer)
    assert not legend.overlaps(ax.get_window_extent(renderer)), 'the legend covers the data'
