"""Downstream use of a pretrained encoder: embeddings and linear probes."""
