"""Certified Lipschitz bounds of torch networks by semidefinite programming."""
