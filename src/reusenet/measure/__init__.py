"""Measuring models: parameters and MACs (multiply-accumulates of conv and linear layers)."""
from .complexity import Complexity, complexity, count_macs, count_params

__all__ = ['Complexity', 'complexity', 'count_macs', 'count_params']
