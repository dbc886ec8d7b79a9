"""The report preview of the Dagster UI stays legible when the two modalities are far apart (a
random tower's cone): some panel fits each cloud, and the image is big enough to read."""

import base64
import io

import numpy as np
from PIL import Image

from conescope.reports import figures


def _extent_share(points: np.ndarray, ax) -> tuple[float, float]:
    """Share of the axes' x and y ranges covered by the points."""
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    span = points.max(axis=0) - points.min(axis=0)
    return span[0] / (x1 - x0), span[1] / (y1 - y0)


def test_each_cloud_fills_a_panel_however_far_apart():
    rng = np.random.default_rng(0)
    image = np.array([0.97, 0.19]) + 0.01 * rng.standard_normal((80, 2))  # two tight clouds, far apart
    text = np.array([-0.19, 0.90]) + 0.02 * rng.standard_normal((80, 2))
    fig = figures.tiny_scatter(image, text, "m / en: shapes")
    both, spread = fig.axes[:2]
    # the overview fits both clouds: together they span most of its axes
    assert min(_extent_share(np.vstack([image, text]), both)) > 0.85
    # each cloud alone is a dot there (under a tenth of the range)...
    assert max(_extent_share(image, both)) < 0.1
    # ...and fills most of the panel drawn around its own centre
    centred = [image - image.mean(axis=0), text - text.mean(axis=0)]
    assert min(_extent_share(np.vstack(centred), spread)) > 0.85
    assert min(_extent_share(centred[1], spread)) > 0.5
    png = base64.b64decode(figures.to_png_data_uri(fig).split(",", 1)[1])
    width, height = Image.open(io.BytesIO(png)).size
    assert width >= 400 and height >= 200
