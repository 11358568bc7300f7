"""Studies: a grid of runs (datasets × settings) executed on Ray and compared in one report."""
