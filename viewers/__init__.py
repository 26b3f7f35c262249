"""Viewers of a published output, without Spark: `aef-zonal plot` (plot.py: map.png and pca.png
of one year) and `aef-zonal map` (webmap.py: one year as one self-contained HTML map). They read
the output with pyarrow by the rules of jobs/dataset.py; the job never imports them."""
