"""Training and evaluation: recipes, the loop, checkpoints."""
from .checkpoint import load_checkpoint, load_weights, save_weights
from .config import TrainConfig, list_recipes, load_config, make_config
from .evaluate import evaluate_saved, load_trained
from .train import NonFiniteLossError, Trainer, TrainingStopped, evaluate, train

__all__ = ["NonFiniteLossError", "TrainConfig", "Trainer", "TrainingStopped", "evaluate", "evaluate_saved",
           "list_recipes", "load_checkpoint", "load_config", "load_trained", "load_weights", "make_config",
           "save_weights", "train"]
