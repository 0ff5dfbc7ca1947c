"""The timeline, zoomed on the server: lanes (``lanes``), level of detail (``lod``), marks
and hover points (``marks``), idle gaps (``gaps``), launch panels (``launches``), click
details (``details``), the per-run view (``view``) and the Plotly figure (``figure``)."""
