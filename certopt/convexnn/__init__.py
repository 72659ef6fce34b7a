"""Global training of two-layer ReLU networks by convex programs."""
