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
