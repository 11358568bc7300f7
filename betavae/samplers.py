"""Latent samplers: where synthetic codes come from, fitted after training and stored with the run.

A β-VAE's aggregate posterior q(z) = E_x q(z|x) rarely matches the prior N(0, I), so decoding
prior codes draws from regions no training image maps to. A sampler fitted ex post on the
training split's codes (Ghosh et al. 2020, "From variational to deterministic autoencoders")
draws codes "like the data" instead. :data:`SAMPLERS` holds one class per kind:

- ``prior``: N(0, I), exactly :func:`betavae.sampling.prior_codes` (nothing to fit or store);
- ``gmm``: a Gaussian mixture with full covariances on the active dimensions of the stored
  ranking (:mod:`betavae.latents`); inactive dimensions stay N(0, 1), which is what the encoder
  puts there and what the decoder ignores. The number of components is chosen by BIC from
  :data:`GMM_COMPONENTS` unless given.
- ``two-stage``: a small second VAE on the active dimensions' codes (Dai & Wipf 2019); its
  samples are not conditioned on fixed dimensions (they are set after drawing).

The prior and the mixture condition on fixed dimensions (``fixed``: one value for every row; ``sweeps``:
a value per row): the Gaussian mixture conditions in closed form (per component
μ_f + Σ_fc Σ_cc⁻¹ (v − μ_c), Σ_ff − Σ_fc Σ_cc⁻¹ Σ_cf, components reweighted by their
likelihood of the fixed values), the prior simply sets them (its dimensions are independent).

The fit is stored as ``RUN/samplers/<kind>.safetensors`` (the parameters) and ``<kind>.json``
(settings, the BIC of each candidate, the checkpoint's sha256): no pickle, and a new checkpoint
refits. Sampling uses the stored parameters (numpy for the mixture, torch for the second VAE), never
scikit-learn's sampler.
"""
from __future__ import annotations

import json
import warnings
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from betavae.fileio import atomic_path, write_json
from betavae.runs import RunPaths
from betavae.sampling import check_dim, prior_codes

SAMPLER_FORMAT = 1
GMM_COMPONENTS = (1, 2, 5, 10, 20)  # the candidates BIC chooses from
FIT_IMAGES = 10_000  # at most this many training images (a seeded subset) are encoded for a fit
_JITTER = 1e-9


class Sampler(ABC):
    """Draws ``n`` latent codes from a seed, with chosen dimensions fixed or swept."""

    kind: ClassVar[str]
    description: ClassVar[str]
    fitted: ClassVar[bool] = True  # False: nothing to fit or store (the prior)

    def __init__(self, latent_dim: int, info: dict | None = None):
        self.latent_dim = latent_dim
        self.info = info or {}  # what the fit recorded (settings, data, checkpoint digest)

    @abstractmethod
    def sample(self, n: int, seed: int = 0, fixed: dict[int, float] | None = None,
               sweeps: dict[int, tuple[float, float]] | None = None) -> torch.Tensor:
        """``(n, latent_dim)`` codes; ``fixed`` dims equal their value, ``sweeps`` dims run from low to high."""

    def settings(self) -> dict:
        """What a manifest records about this sampler."""
        return {"kind": self.kind, "description": self.description}

    def tensors(self) -> dict[str, torch.Tensor]:
        return {}

    @classmethod
    def from_stored(cls, tensors: dict[str, torch.Tensor], info: dict) -> Sampler:
        raise NotImplementedError


class PriorSampler(Sampler):
    kind = "prior"
    description = "z ~ N(0, I)"
    fitted = False

    def sample(self, n, seed=0, fixed=None, sweeps=None):
        return prior_codes(n, self.latent_dim, seed, fixed, sweeps)


class GMMSampler(Sampler):
    """A Gaussian mixture on the ``active`` dimensions; the others N(0, 1)."""

    kind = "gmm"
    description = "Gaussian mixture (full covariances) on the active dimensions, fitted to the training codes; inactive ones N(0, 1)"

    def __init__(self, latent_dim: int, active: list[int], weights: np.ndarray, means: np.ndarray,
                 covariances: np.ndarray, info: dict | None = None):
        super().__init__(latent_dim, info)
        self.active = [int(d) for d in active]
        self.weights = np.asarray(weights, dtype=np.float64)
        self.means = np.asarray(means, dtype=np.float64).reshape(len(self.weights), len(self.active))
        self.covariances = np.asarray(covariances, dtype=np.float64).reshape(
            len(self.weights), len(self.active), len(self.active))
        if not np.isclose(self.weights.sum(), 1.0) or (self.weights < 0).any():
            raise ValueError("the mixture weights must be non-negative and sum to 1")

    @property
    def components(self) -> int:
        return len(self.weights)

    def settings(self) -> dict:
        keep = ("components", "chosen_by", "bic", "fit_images", "fit_codes", "seed", "checkpoint_sha256")
        return {**super().settings(), "active_dims": self.active, "components": self.components,
                **{k: self.info[k] for k in keep if k in self.info and k != "components"}}

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"weights": torch.from_numpy(self.weights), "means": torch.from_numpy(self.means),
                "covariances": torch.from_numpy(self.covariances),
                "active": torch.tensor(self.active, dtype=torch.int64)}

    @classmethod
    def from_stored(cls, tensors, info):
        return cls(int(info["latent_dim"]), tensors["active"].tolist(), tensors["weights"].numpy(),
                   tensors["means"].numpy(), tensors["covariances"].numpy(), info)

    def sample(self, n, seed=0, fixed=None, sweeps=None):
        fixed, sweeps = dict(fixed or {}), dict(sweeps or {})
        for dim in (*fixed, *sweeps):
            check_dim(dim, self.latent_dim)
        if set(fixed) & set(sweeps):
            raise ValueError("a dimension cannot be both fixed and swept")
        rng = np.random.default_rng(seed)
        z = rng.standard_normal((n, self.latent_dim))  # the inactive dimensions: N(0, 1)
        values = np.empty((n, 0))
        swept = sorted(sweeps)
        if swept:
            values = np.stack([np.linspace(*sweeps[d], n) for d in swept], axis=1)
        conditioned = [d for d in [*fixed, *swept] if d in self.active]
        position = {d: i for i, d in enumerate(self.active)}
        c = [position[d] for d in conditioned]
        f = [i for i in range(len(self.active)) if i not in c]
        if not swept or not any(d in self.active for d in swept):  # one condition for every row
            row_values = np.array([fixed[d] for d in conditioned], dtype=np.float64)
            if self.active:
                z[:, self.active] = self._draw(rng, n, c, f, row_values)
        else:
            for row in range(n):  # a sweep conditions each row on its own value
                given = {**fixed, **dict(zip(swept, values[row]))}
                row_values = np.array([given[d] for d in conditioned], dtype=np.float64)
                z[row, self.active] = self._draw(rng, 1, c, f, row_values)[0]
        for dim, value in fixed.items():
            z[:, dim] = value
        for i, dim in enumerate(swept):
            z[:, dim] = values[:, i]
        return torch.from_numpy(z).float()

    def _draw(self, rng: np.random.Generator, n: int, c: list[int], f: list[int], v: np.ndarray) -> np.ndarray:
        """``n`` draws of the active dimensions given dims ``c`` (positions in ``active``) equal ``v``."""
        weights, means, covs = condition_mixture(self.weights, self.means, self.covariances, c, v)
        out = np.empty((n, len(self.active)))
        out[:, c] = v
        if not f:
            return out
        which = rng.choice(len(weights), size=n, p=weights)
        noise = rng.standard_normal((n, len(f)))
        for k in np.unique(which):
            rows = which == k
            factor = _cholesky(covs[k])
            out[np.ix_(rows, f)] = means[k] + noise[rows] @ factor.T
        return out


def condition_mixture(weights: np.ndarray, means: np.ndarray, covariances: np.ndarray, given: list[int],
                      values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A Gaussian mixture over the dimensions not in ``given``, conditioned on ``given`` = ``values``.

    Per component k: mean μ_f + Σ_fc Σ_cc⁻¹ (v − μ_c), covariance Σ_ff − Σ_fc Σ_cc⁻¹ Σ_cf; weights
    w_k N(v; μ_c, Σ_cc), normalised (in log space, so far-off values do not underflow to 0/0).
    """
    weights, means, covariances = (np.asarray(a, dtype=np.float64) for a in (weights, means, covariances))
    values = np.asarray(values, dtype=np.float64)
    dims = means.shape[1]
    free = [i for i in range(dims) if i not in given]
    if not given:
        return weights, means[:, free], covariances[np.ix_(range(len(weights)), free, free)]
    log_w = np.log(np.maximum(weights, 1e-300))
    out_means, out_covs = [], []
    for k in range(len(weights)):
        cov = covariances[k]
        s_cc = cov[np.ix_(given, given)]
        s_fc = cov[np.ix_(free, given)]
        diff = values - means[k, given]
        solve = np.linalg.solve(s_cc, np.column_stack([diff, s_fc.T]))
        sign, logdet = np.linalg.slogdet(s_cc)
        log_w[k] += -0.5 * (diff @ solve[:, 0] + logdet + len(given) * np.log(2 * np.pi))
        out_means.append(means[k, free] + s_fc @ solve[:, 0])
        out_covs.append(cov[np.ix_(free, free)] - s_fc @ solve[:, 1:])
    log_w -= log_w.max()
    posterior = np.exp(log_w)
    return posterior / posterior.sum(), np.array(out_means).reshape(len(weights), len(free)), \
        np.array(out_covs).reshape(len(weights), len(free), len(free))


def _cholesky(cov: np.ndarray) -> np.ndarray:
    cov = (cov + cov.T) / 2
    jitter = _JITTER * max(float(np.trace(cov)) / max(len(cov), 1), 1e-12)
    for _ in range(8):
        try:
            return np.linalg.cholesky(cov + jitter * np.eye(len(cov)))
        except np.linalg.LinAlgError:
            jitter *= 100
    values, vectors = np.linalg.eigh(cov)
    return vectors * np.sqrt(np.clip(values, 0, None))


class _SecondVAE(torch.nn.Module):
    """The second-stage VAE of Dai & Wipf 2019: MLPs on the (standardised) active codes, a Gaussian
    decoder with one learned variance γ."""

    def __init__(self, dim: int, latent: int, hidden: int):
        super().__init__()
        self.encoder = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.GELU(),
                                           torch.nn.Linear(hidden, hidden), torch.nn.GELU(),
                                           torch.nn.Linear(hidden, 2 * latent))
        self.decoder = torch.nn.Sequential(torch.nn.Linear(latent, hidden), torch.nn.GELU(),
                                           torch.nn.Linear(hidden, hidden), torch.nn.GELU(),
                                           torch.nn.Linear(hidden, dim))
        self.log_gamma = torch.nn.Parameter(torch.tensor(-2.0))  # γ starts small: the latents must explain the codes

    def loss(self, x: torch.Tensor, generator: torch.Generator, kl_weight: float = 1.0) -> torch.Tensor:
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        u = mean + torch.randn(mean.shape, generator=generator) * (0.5 * logvar).exp()
        error = (x - self.decoder(u)).pow(2).sum(1)
        nll = error / (2 * self.log_gamma.exp()) + 0.5 * x.shape[1] * self.log_gamma
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum(1)
        return (nll + kl_weight * kl).mean()


class TwoStageSampler(Sampler):
    """A second VAE on the active dimensions' codes (Dai & Wipf 2019, "Diagnosing and enhancing VAE
    models"): u ~ N(0, I), then x ~ N(decoder(u), γ I) → the active dims (the second VAE's generative
    model; γ → 0 where the codes lie on a manifold, and where they are close to Gaussian the
    second VAE may collapse to γ ≈ 1 with the noise modelling them); the inactive ones N(0, 1).

    There is no closed-form conditional: ``fixed``/``sweeps`` dims are set after drawing the others
    (which therefore do not depend on them); :meth:`settings` says so."""

    kind = "two-stage"
    description = "second VAE (Dai & Wipf 2019) on the active dimensions' training codes; inactive ones N(0, 1)"
    STEPS, HIDDEN, BATCH, LR = 3000, 256, 256, 1e-3

    def __init__(self, latent_dim: int, active: list[int], tensors: dict[str, torch.Tensor], info: dict | None = None):
        super().__init__(latent_dim, info)
        self.active = [int(d) for d in active]
        self.hidden = int(self.info.get("hidden", self.HIDDEN))
        self.shift = tensors["shift"].float()
        self.scale = tensors["scale"].float()
        self.net = _SecondVAE(len(self.active), len(self.active), self.hidden).eval() if self.active else None
        if self.net is not None:
            self.net.load_state_dict({k[len("net."):]: v.float() for k, v in tensors.items() if k.startswith("net.")})

    def settings(self) -> dict:
        keep = ("steps", "hidden", "final_loss", "gamma", "fit_images", "fit_codes", "seed", "checkpoint_sha256")
        return {**super().settings(), "active_dims": self.active, **{k: self.info[k] for k in keep if k in self.info},
                "conditioning": "fixed and swept dims are set after drawing; the others do not depend on them"}

    def tensors(self) -> dict[str, torch.Tensor]:
        state = {f"net.{k}": v.detach().clone() for k, v in self.net.state_dict().items()} if self.net else {}
        return {**state, "shift": self.shift, "scale": self.scale, "active": torch.tensor(self.active, dtype=torch.int64)}

    @classmethod
    def from_stored(cls, tensors, info):
        return cls(int(info["latent_dim"]), tensors["active"].tolist(), tensors, info)

    @classmethod
    def fit(cls, codes: np.ndarray, latent_dim: int, active: list[int], seed: int = 0, progress: bool = False,
            steps: int | None = None) -> TwoStageSampler:
        """Trains the second VAE on ``codes[:, active]`` (standardised per dimension), seeded."""
        from betavae.metrics.disentanglement import progress_bar

        steps = steps or cls.STEPS
        x = torch.as_tensor(np.asarray(codes)[:, active], dtype=torch.float32)
        shift, scale = x.mean(0), x.std(0).clamp_min(1e-6) if len(x) > 1 else torch.ones(len(active))
        info = {"steps": steps, "hidden": cls.HIDDEN, "batch_size": cls.BATCH, "lr": cls.LR,
                "kl_warmup": "linear over the first quarter of the steps", "initial_gamma": round(float(np.exp(-2.0)), 6)}
        if not active:
            return cls(latent_dim, [], {"shift": shift, "scale": scale}, info)
        x = (x - shift) / scale
        generator = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            net = _SecondVAE(len(active), len(active), cls.HIDDEN)
        optimiser = torch.optim.Adam(net.parameters(), lr=cls.LR)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
        losses = []
        warmup = max(1, steps // 4)  # the KL term's weight rises linearly over the first quarter
        with progress_bar(progress, steps, "two-stage VAE on the codes", "step") as bar:
            for step in range(steps):
                rows = torch.randint(len(x), (min(cls.BATCH, len(x)),), generator=generator)
                loss = net.loss(x[rows], generator, min(1.0, (step + 1) / warmup))
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                schedule.step()
                losses.append(float(loss.detach()))
                bar.update(1)
        info |= {"final_loss": round(float(np.mean(losses[-50:])), 4), "gamma": round(float(net.log_gamma.detach().exp()), 6)}
        state = {f"net.{k}": v.detach() for k, v in net.state_dict().items()}
        return cls(latent_dim, active, {**state, "shift": shift, "scale": scale}, info)

    @torch.no_grad()
    def sample(self, n, seed=0, fixed=None, sweeps=None):
        generator = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.latent_dim, generator=generator)
        if self.net is not None:
            u = torch.randn(n, len(self.active), generator=generator)
            noise = torch.randn(n, len(self.active), generator=generator)
            x = self.net.decoder(u) + noise * (0.5 * self.net.log_gamma).exp()
            z[:, self.active] = x * self.scale + self.shift
        for dim, value in (fixed or {}).items():
            check_dim(dim, self.latent_dim)
            z[:, dim] = value
        for dim, (low, high) in (sweeps or {}).items():
            check_dim(dim, self.latent_dim)
            z[:, dim] = torch.linspace(low, high, n)
        return z


SAMPLERS: dict[str, type[Sampler]] = {cls.kind: cls for cls in (PriorSampler, GMMSampler, TwoStageSampler)}


def check_kind(kind: str) -> str:
    if kind not in SAMPLERS:
        raise ValueError(f"no sampler {kind!r}; the samplers: {', '.join(SAMPLERS)}")
    return kind


def fit_gmm(codes: np.ndarray, components: int | None = None, seed: int = 0,
            progress: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Weights, means and full covariances of a Gaussian mixture on ``codes`` ``(N, D)``, and the BIC
    of each candidate number of components (``components``, or those of :data:`GMM_COMPONENTS` below N)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    from betavae.metrics.disentanglement import progress_bar

    codes = np.asarray(codes, dtype=np.float64)
    if len(codes) < 2:
        raise ValueError(f"a Gaussian mixture needs the codes of at least 2 training images (got {len(codes)})")
    if components is not None and components > len(codes):
        raise ValueError(f"{components} components need at least as many training images (got {len(codes)})")
    candidates = [components] if components else [k for k in GMM_COMPONENTS if k <= max(1, len(codes) // 2)] or [1]
    best, bics = None, {}
    with progress_bar(progress, len(candidates), "GMM (BIC over components)", "fit") as bar:
        for k in candidates:
            model = GaussianMixture(k, covariance_type="full", random_state=seed, reg_covar=1e-6, n_init=1, max_iter=200)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model.fit(codes)
            bics[k] = float(model.bic(codes))
            if best is None or bics[k] < bics[best[0]]:
                best = (k, model)
            bar.update(1)
    model = best[1]
    return model.weights_, model.means_, model.covariances_, {
        "components": best[0], "chosen_by": "given" if components else "BIC", "bic": {str(k): round(v, 3) for k, v in bics.items()}}


def training_codes(trained, max_images: int | None = FIT_IMAGES, seed: int = 0, progress: bool = False) -> tuple[np.ndarray, str]:
    """Posterior means μ of (a seeded subset of) the training split, and how they were chosen.

    Why μ and not z ~ q(z|x): μ are the centres of the aggregate posterior's components, the codes
    the decoder reconstructs the training images from; they are deterministic for a checkpoint, so
    a fit is reproducible from its seed alone. The encoder's noise in the active dimensions is
    small beside the spread of μ (that is what makes them active), and in the inactive ones μ ≈ 0
    while q(z|x) ≈ N(0, 1): those stay N(0, 1) in every sampler, so nothing is lost there.
    """
    from betavae.metrics.disentanglement import progress_bar

    train = np.asarray(trained.data().train_indices)
    if len(train) == 0:
        raise ValueError(f"{trained.run_dir}: the run has no training split to fit a sampler on")
    if max_images is not None and max_images < len(train):
        rows = np.sort(np.random.default_rng(seed).choice(train, size=max_images, replace=False))
        described = f"posterior means μ of {max_images} of {len(train)} training images (seeded subset, seed {seed})"
    else:
        rows = np.sort(train)
        described = f"posterior means μ of all {len(train)} training images"
    means = []
    with progress_bar(progress, len(rows), "encoding training images", "img") as bar:
        for start in range(0, len(rows), 256):
            chunk = rows[start:start + 256]
            means.append(trained.encode(trained.images(chunk)).mean.numpy())
            bar.update(len(chunk))
    return np.concatenate(means).astype(np.float64), described


def fit_sampler(trained, kind: str = "gmm", components: int | None = None, seed: int = 0,
                max_images: int | None = FIT_IMAGES, progress: bool = False, store: bool = True) -> Sampler:
    """Fits a sampler of ``kind`` on the training split's codes and stores it with the run (when it can)."""
    from betavae.latents import latent_ranking, weights_digest

    cls = SAMPLERS[check_kind(kind)]
    if not cls.fitted:
        return cls(trained.latent_dim, {"kind": kind})
    if components is not None and components < 1:
        raise ValueError("--components must be at least 1")
    if components is not None and cls is not GMMSampler:  # before the training images are encoded
        raise ValueError("--components applies to the gmm sampler only")
    ranking = latent_ranking(trained)
    codes, described = training_codes(trained, max_images, seed, progress)
    active = list(ranking.active)
    info = {"format": SAMPLER_FORMAT, "kind": kind, "latent_dim": trained.latent_dim, "active_dims": active,
            "fit_codes": described, "fit_images": len(codes), "seed": seed,
            "checkpoint_sha256": weights_digest(trained)}
    if cls is TwoStageSampler:
        sampler = TwoStageSampler.fit(codes, trained.latent_dim, active, seed, progress)
        sampler.info = {**info, **sampler.info}
        return _stored(trained, sampler, store)
    if active:
        weights, means, covs, chosen = fit_gmm(codes[:, active], components, seed, progress)
    else:  # nothing active: the mixture is empty and every dimension N(0, 1)
        weights, means, covs, chosen = np.ones(1), np.zeros((1, 0)), np.zeros((1, 0, 0)), {
            "components": 1, "chosen_by": "no active dimensions", "bic": {}}
    sampler = GMMSampler(trained.latent_dim, active, weights, means, covs, {**info, **chosen})
    return _stored(trained, sampler, store)


def _stored(trained, sampler: Sampler, store: bool) -> Sampler:
    if store:
        try:
            save_sampler(RunPaths(Path(trained.run_dir)), sampler)
        except OSError:
            pass  # a read-only run folder still gets its sampler, just not stored
    return sampler


def save_sampler(paths: RunPaths, sampler: Sampler) -> Path:
    from safetensors.torch import save_file

    target = paths.sampler(sampler.kind)
    target.parent.mkdir(parents=True, exist_ok=True)
    # the .json goes first and comes back last: a write cut short (Ctrl-C, full disk) leaves no .json,
    # so the other half is never read with a previous fit's settings (stored_sampler then refits)
    paths.sampler_info(sampler.kind).unlink(missing_ok=True)
    with atomic_path(target) as tmp:
        save_file({k: v.contiguous() for k, v in sampler.tensors().items()}, str(tmp))
    write_json(paths.sampler_info(sampler.kind), sampler.info)
    return target


def stored_sampler(trained, kind: str) -> Sampler | None:
    """The stored sampler of ``kind`` fitted to ``trained``'s checkpoint; None when missing, stale or unreadable."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from betavae.latents import UNKNOWN, weights_digest

    cls = SAMPLERS[check_kind(kind)]
    if not cls.fitted:
        return cls(trained.latent_dim, {"kind": kind})
    paths = RunPaths(Path(trained.run_dir))
    try:
        info = json.loads(paths.sampler_info(kind).read_text())
        if not isinstance(info, dict) or info.get("format") != SAMPLER_FORMAT \
                or info.get("latent_dim") != trained.latent_dim:
            return None
        if info.get("checkpoint_sha256") in (None, UNKNOWN) or info["checkpoint_sha256"] != weights_digest(trained):
            return None
        return cls.from_stored(load_file(str(paths.sampler(kind))), info)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError):
        return None  # RuntimeError: a second VAE's tensors that do not fit its network


def get_sampler(trained, kind: str = "prior", progress: bool = False, **fit_options) -> Sampler:
    """The stored sampler of ``kind`` for ``trained``, fitted (with ``fit_options``) and stored first when missing or stale."""
    return stored_sampler(trained, kind) or fit_sampler(trained, kind, progress=progress, **fit_options)
