"""Cost of subnets: analytic flops and params, constraint parsing, latency tables."""
