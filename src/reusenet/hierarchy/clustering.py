"""Label clustering: C classes -> K clusters from a class affinity (RefiNet paper, Section 5.1-5.2, Table 4).

The paper compares four algorithms and finds spectral clustering best (Table 4); all four come from
scikit-learn and the `kmedoids` package rather than being written here:

* "spectral": sklearn SpectralClustering on the affinity, followed by k-means in the spectral embedding
  (assign_labels="kmeans"), the paper's choice and our default.
* "agglomerative": sklearn AgglomerativeClustering, average linkage on the distance below.
* "affinity-propagation": sklearn AffinityPropagation on the affinity. It picks its own number of
  clusters; the paper reports it at a fixed K, so we bisect its `preference` (the self-similarity that
  sets how many exemplars emerge) until it yields K clusters, and keep the closest count if none does.
* "kmedoids": FasterPAM (`kmedoids.fasterpam`) on the distance below.

Choices the paper leaves open: the diagonal of the affinity (a class's similarity to itself) is set to
zero for every algorithm, since it says how well a class is recognised, not which classes go together;
distance-based algorithms use d = max(A) - A (zero on the diagonal), which keeps the order of the
affinities. Cluster ids are renumbered by their smallest class, so equal partitions get equal ids.
"""
from __future__ import annotations

import numpy as np

from ..errors import UserError, did_you_mean

__all__ = ["CLUSTERINGS", "cluster_accuracy", "cluster_classes"]

CLUSTERINGS = ("spectral", "agglomerative", "affinity-propagation", "kmedoids")


def _similarity(affinity) -> np.ndarray:
    affinity = np.asarray(affinity, dtype=np.float64)
    if affinity.ndim != 2 or affinity.shape[0] != affinity.shape[1]:
        raise UserError(f"an affinity must be a square C x C matrix, got shape {affinity.shape}.")
    similarity = (affinity + affinity.T) / 2
    np.fill_diagonal(similarity, 0.0)
    return similarity


def _distance(similarity: np.ndarray) -> np.ndarray:
    distance = similarity.max() - similarity
    np.fill_diagonal(distance, 0.0)
    return distance


def _spectral(similarity: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.cluster import SpectralClustering

    # A tiny ridge keeps the graph connected when whole groups are never confused with each other.
    graph = similarity + 1e-9 * (1 - np.eye(len(similarity)))
    return SpectralClustering(k, affinity="precomputed", assign_labels="kmeans", random_state=seed,
                              n_init=10).fit_predict(graph)


def _agglomerative(similarity: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.cluster import AgglomerativeClustering

    return AgglomerativeClustering(k, metric="precomputed", linkage="average").fit_predict(_distance(similarity))


def _kmedoids(similarity: np.ndarray, k: int, seed: int) -> np.ndarray:
    import kmedoids

    return np.asarray(kmedoids.fasterpam(_distance(similarity), k, random_state=seed).labels)


def _affinity_propagation(similarity: np.ndarray, k: int, seed: int) -> np.ndarray:
    import warnings

    from sklearn.cluster import AffinityPropagation
    from sklearn.exceptions import ConvergenceWarning

    off_diagonal = similarity[~np.eye(len(similarity), dtype=bool)]
    low, high = off_diagonal.min() - 10 * (np.ptp(off_diagonal) + 1e-12), off_diagonal.max()
    best = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(40):
            preference = (low + high) / 2
            labels = AffinityPropagation(affinity="precomputed", preference=preference, random_state=seed,
                                         max_iter=500).fit_predict(similarity)
            found = len(np.unique(labels)) if labels.min() >= 0 else 0
            if best is None or abs(found - k) < abs(best[0] - k):
                best = (found, labels)
            if found == k:
                break
            low, high = (preference, high) if found < k else (low, preference)
    if best[0] == 0:
        raise UserError("affinity propagation did not converge on this affinity; use clustering spectral.")
    return best[1]


_ALGORITHMS = {"spectral": _spectral, "agglomerative": _agglomerative,
               "affinity-propagation": _affinity_propagation, "kmedoids": _kmedoids}


def check_clustering(method: str) -> str:
    if method not in _ALGORITHMS:
        raise UserError(f"unknown clustering {method!r}; choose one of {', '.join(CLUSTERINGS)}."
                        + did_you_mean(str(method), CLUSTERINGS))
    return method


def cluster_classes(affinity, k: int, method: str = "spectral", seed: int = 0) -> np.ndarray:
    """The cluster id (0..K'-1) of each class; K' = k except where affinity propagation cannot reach k."""
    check_clustering(method)
    similarity = _similarity(affinity)
    num_classes = len(similarity)
    if not isinstance(k, int) or isinstance(k, bool) or not 2 <= k <= num_classes:
        raise UserError(f"k (the number of clusters) must be an integer from 2 to the number of classes "
                        f"({num_classes}), got {k!r}.")
    labels = _ALGORITHMS[method](similarity, k, seed)
    return renumber(labels)


def renumber(labels) -> np.ndarray:
    """Cluster ids in order of each cluster's smallest class: [2, 2, 0, 1] -> [0, 0, 1, 2]."""
    labels = np.asarray(labels)
    order = {cluster: index for index, cluster in enumerate(dict.fromkeys(labels.tolist()))}
    return np.asarray([order[c] for c in labels.tolist()], dtype=np.int64)


def cluster_accuracy(labels, predicted_clusters, cluster_of) -> float:
    """Share (%) of images whose true class lies in the cluster they were routed to (Table 4's metric)."""
    labels, predicted = np.asarray(labels), np.asarray(predicted_clusters)
    if labels.shape != predicted.shape or len(labels) == 0:
        raise UserError(f"cluster accuracy needs one predicted cluster per label, got {predicted.shape} "
                        f"for {labels.shape}.")
    return 100.0 * float(np.mean(np.asarray(cluster_of)[labels] == predicted))
