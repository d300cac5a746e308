"""Architecture search over a trained supernet: evolutionary and random search, Pareto front."""
