"""Analysis of trained models: which latent captures which factor, and the disentanglement report."""
from betavae.analysis.dimensions import (
    attribute_correlations,
    attribute_dimensions,
    name_dimensions,
    normalized_mi_matrix,
    plot_mi_heatmap,
)
from betavae.analysis.report import disentanglement_report
