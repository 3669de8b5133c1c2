"""Nuclei outputs in the formats other tools read: GeoJSON for QuPath, overlay PNGs for people,
PanNuke-format masks for ``cellbench eval pannuke`` and other scorers. Numpy/scikit-image only
(no torch): importing this package stays light."""
