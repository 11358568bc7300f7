"""Metrics: image quality (PSNR, SSIM, FID, KID) and disentanglement (MIG, SAP, DCI, BetaVAE, FactorVAE)."""
from betavae.metrics.disentanglement import active_units, beta_vae_score, dci, factor_vae_score, gaussian_total_correlation, mig, sap  # noqa: F401
from betavae.metrics.image import psnr, ssim  # noqa: F401
from betavae.metrics.fid import FeatureExtractor, FeatureStats, fid_from_stats, frechet_distance, inception_extractor, kid  # noqa: F401
from betavae.metrics.udr import similarity_matrix, udr, udr_pair  # noqa: F401
from betavae.metrics.prdc import density_coverage, precision_recall, prdc  # noqa: F401
