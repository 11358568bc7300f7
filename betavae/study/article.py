"""The article's numbers (Purbaya et al., Tables 2–4; see docs/study.md §7) and the article row a study cell reproduces."""
from __future__ import annotations

import math
from dataclasses import dataclass

from betavae.config import RunConfig

STUDY_KLD_WEIGHT = 0.0025  # the article's w in L = MSE + β·w·KLD (Tables 2 and 3)
FID_SAMPLES = 2400  # Table 3: FID of 2,400 samples from N(0, I); the reference set size is not given
DATASET_NAMES = {"cars": "OxfordCar", "celeba": "CelebA", "cats": "Cat faces", "batik": "Batik Megamendung"}
EVAL_IMAGES = {"cars": 2439, "celeba": 2036, "cats": 3937, "batik": 600}  # Table 2's n

# Table 2: (SSIM, PSNR in dB) by (dataset, β), mean over EVAL_IMAGES outside photos.
TABLE2 = {
    ("cars", 10): (0.189, 29.202), ("cars", 100): (0.132, 28.924),
    ("celeba", 10): (0.293, 29.668), ("celeba", 100): (0.242, 29.475),
    ("cats", 10): (0.174, 29.208), ("cats", 100): (0.126, 28.905),
    ("batik", 10): (-0.010, 27.904), ("batik", 100): (-0.002, 27.917),
}
# Table 3: FID by (dataset, β).
TABLE3 = {
    ("cars", 10): 305.426, ("cars", 100): 293.873,
    ("celeba", 10): 138.452, ("celeba", 100): 149.211,
    ("cats", 10): 188.945, ("cats", 100): 171.680,
    ("batik", 10): 431.118, ("batik", 100): 402.966,
}
# Table 4: batik with β = 1, (SSIM, PSNR in dB) by KLD weight.
TABLE4 = {0.0025: (-0.008, 27.930), 0.000001: (-0.018, 27.903)}


@dataclass(frozen=True)
class ArticleNumbers:
    """The article's result for one dataset × β × KLD weight."""

    table: str  # "2" (Tables 2 and 3) or "4"
    dataset: str  # cars | celeba | cats | batik
    beta: float
    kld_weight: float
    ssim: float
    psnr: float
    n: int | None  # evaluation images (Table 4 does not say)
    fid: float | None = None
    fid_samples: int | None = None

    @property
    def name(self) -> str:
        """The dataset's name in the article."""
        return DATASET_NAMES[self.dataset]


def article_numbers(dataset: str | None, config: RunConfig | None) -> ArticleNumbers | None:
    """The article's numbers for a cell of the study dataset reproducing the article's ``dataset``, or None.

    A cell matches when ``dataset`` is one of the article's and its resolved config is the article's
    objective (β-VAE, per-element MSE) with the same β and KLD weight.
    """
    if config is None or dataset not in DATASET_NAMES:
        return None
    objective = config.objective
    if objective.name != "beta" or objective.reconstruction != "mse_mean":
        return None
    beta, weight = float(objective.beta), float(objective.kld_weight)
    if (dataset, beta) in TABLE2 and math.isclose(weight, STUDY_KLD_WEIGHT, rel_tol=1e-9):
        ssim, psnr = TABLE2[dataset, beta]
        return ArticleNumbers("2", dataset, beta, weight, ssim, psnr, EVAL_IMAGES[dataset],
                              TABLE3[dataset, beta], FID_SAMPLES)
    if dataset == "batik" and beta == 1:
        for table_weight, (ssim, psnr) in TABLE4.items():
            if math.isclose(weight, table_weight, rel_tol=1e-9):
                return ArticleNumbers("4", dataset, beta, weight, ssim, psnr, None)
    return None
