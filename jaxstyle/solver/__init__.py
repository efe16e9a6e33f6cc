"""How it is optimized: L-BFGS inside a jitted loop, and its line search."""
