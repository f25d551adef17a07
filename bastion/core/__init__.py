"""Leaf package: frozen records passed between pipeline stages, the error tree, the clock."""
