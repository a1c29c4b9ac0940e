"""Building blocks of the papers, each usable alone in any PyTorch model. Layers never import models."""
