"""Token streams, the embedded corpus, activation stores, the shard cache and loss gradients."""
