"""Measuring models: parameters and MACs (multiply-accumulates of conv and linear layers), peak memory,
latency and throughput of inference and of a training step."""
from .complexity import Complexity, complexity, count_macs, count_params
from .memory import MemoryResult, peak_memories, peak_memory
from .timing import Timing, latency

__all__ = ['Complexity', 'MemoryResult', 'Timing', 'complexity', 'count_macs', 'count_params', 'latency',
           'peak_memories', 'peak_memory']
