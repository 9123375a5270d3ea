"""Models: weights, device rule, chat format, forward passes, sampling, log-probs, embeddings."""
