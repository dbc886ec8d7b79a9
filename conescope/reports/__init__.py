"""HTML reports: self-contained pages (inline SVG, inline thumbnails, one small script) that open
offline.

- ``page``: the page template, its stylesheet and its one hover script, metric tables;
- ``svg``: the interactive figures, hand-written SVG (scatter with pair lines, heatmap) whose points
  carry a caption and a thumbnail key the hover script shows;
- ``figures``: static figures drawn with matplotlib (spectrum, histograms, curves, bars) as inline
  SVG, and the small PNG previews of the Dagster UI;
- ``projections``: SVD projections, t-SNE maps (joint and out-of-sample), clustering of the heatmap;
- ``cache``: slow results cached under the data root by a hash of their input data;
- ``thumbs``: image thumbnails from the dataset manifest;
- one module per report kind: ``partition``, ``comparison``, ``multilingual``, ``paper`` (with the
  published numbers in ``published``).
"""
