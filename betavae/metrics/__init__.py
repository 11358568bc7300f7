"""Metrics: image quality (PSNR, SSIM, FID, KID) and disentanglement (MIG, SAP, DCI, BetaVAE, FactorVAE)."""
