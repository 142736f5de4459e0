"""NNGP kernels, orthant probabilities and log P_B(f|S)."""
