"""RefiNet hierarchical classification (the RefiNet paper, Sections 5-6), on any backbone and label set.

`fit(load_refinet_config("digits"))` trains level 1, builds the label hierarchy, trains a CNN per cluster
and saves one artifact; `load_refinet(folder)` loads it back and `predict_files` classifies image files.
"""
from .affinity import class_affinity, confusion_affinity, mass_shift_affinity
from .clustering import CLUSTERINGS, cluster_accuracy, cluster_classes
from .heads import ClusterClassifier, ClusterHead, ClusterNet, FrozenTrunk
from .model import Node, RefiNet, load_refinet
from .pipeline import RefiNetConfig, evaluate, fit, load_refinet_config, make_refinet_config
from .router import ROUTERS, cluster_mass, vote

__all__ = ["CLUSTERINGS", "ROUTERS", "ClusterClassifier", "ClusterHead", "ClusterNet", "FrozenTrunk", "Node",
           "RefiNet", "RefiNetConfig", "class_affinity", "cluster_accuracy", "cluster_classes", "cluster_mass",
           "confusion_affinity", "evaluate", "fit", "load_refinet", "load_refinet_config", "make_refinet_config",
           "mass_shift_affinity", "vote"]
