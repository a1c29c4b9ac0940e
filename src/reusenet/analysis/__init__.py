"""Analyses of trained models: class selectivity, output variability, embeddings."""
