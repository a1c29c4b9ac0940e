"""Routing images to clusters (RefiNet paper, Section 5.1 "aggregation layer" and Section 6.2).

* vote: each of the top-5 classes of the classifier (`voters`, 5 in the paper) votes for its cluster; the
  cluster with most votes wins, ties go to the cluster with the larger summed probability of its votes,
  then to the smaller id. With few classes per cluster, low-probability classes can outvote a confident
  top-1 (digits, K=3: see docs/refinet.md), hence `voters` is a setting.
  A class with zero probability casts no vote: with an exactly one-hot output the other four "top-5"
  classes are arbitrary ties, not predictions (softmax outputs are never exactly zero, so this changes
  nothing for a trained network). Fewer than 5 classes: all of them vote.
* retrain: level 1 retrained to output cluster labels directly; the router is then the argmax of that
  classifier (the module is `ClusterClassifier` in heads.py; this file only turns its logits into ids).
* soft: HD-CNN's probabilistic averaging, the paper's future work: p(y|x) = sum_k B_k(x) p_k(y|x) /
  sum_k B_k(x), with B_k(x) the classifier's probability mass on the classes of cluster k.
"""
from __future__ import annotations

import torch

from ..errors import UserError, did_you_mean

__all__ = ["ROUTERS", "check_router", "cluster_mass", "vote"]

ROUTERS = ("vote", "soft", "retrain")
VOTERS = 5


def check_router(router: str) -> str:
    if router not in ROUTERS:
        raise UserError(f"unknown router {router!r}; choose one of {', '.join(ROUTERS)}."
                        + did_you_mean(str(router), ROUTERS))
    return router


def cluster_mass(probs: torch.Tensor, cluster_of: torch.Tensor, num_clusters: int) -> torch.Tensor:
    """B x K: the probability each image puts on each cluster's classes (B_k of soft routing)."""
    mass = probs.new_zeros(len(probs), num_clusters)
    return mass.index_add_(1, cluster_of.to(probs.device), probs)


def vote(probs: torch.Tensor, cluster_of: torch.Tensor, num_clusters: int, voters: int = VOTERS) -> torch.Tensor:
    """The cluster id each image is routed to by top-`voters` voting with the tie-break above."""
    top_probs, top_classes = probs.topk(min(voters, probs.shape[1]), dim=1)
    clusters = cluster_of.to(probs.device)[top_classes]
    counted = (top_probs > 0).to(probs.dtype)
    votes = probs.new_zeros(len(probs), num_clusters).scatter_add_(1, clusters, counted)
    mass = probs.new_zeros(len(probs), num_clusters).scatter_add_(1, clusters, top_probs * counted)
    leaders = votes == votes.max(dim=1, keepdim=True).values
    return torch.where(leaders, mass, torch.full_like(mass, -1.0)).argmax(dim=1)
