"""Sound bound propagation over the IR, batched over boxes."""
