"""The explorer's web app: one self-contained page and a JSON/PNG API over the served runs."""
from __future__ import annotations

import base64
import re
from importlib.resources import files

import torch
from fastapi import FastAPI, File, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field

from betavae.explorer.state import (
    LATENT_BOUND,
    MAX_EXPORT,
    MAX_TRAVERSAL_STEPS,
    MAX_UPLOAD_BYTES,
    ExplorerModel,
    RequestError,
    check_latent,
    export_zip,
    png_bytes,
    read_upload,
    traversal_strip,
)

_MAX_DIMS = 4096
_MULTIPART_OVERHEAD = 64 * 1024


class Latent(BaseModel):
    """A latent vector."""

    z: list[float] = Field(max_length=_MAX_DIMS)


class Traversal(Latent):
    """A latent vector and the dimension to run across ``steps`` values from ``low`` to ``high``."""

    dim: int
    steps: int = Field(9, ge=2, le=MAX_TRAVERSAL_STEPS)
    low: float = -3.0
    high: float = 3.0


class Export(BaseModel):
    """``n`` seeded prior samples; ``fixed`` dims take one value, ``sweeps`` dims run from low to high."""

    n: int = Field(ge=1, le=MAX_EXPORT)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    fixed: dict[int, float] = Field(default_factory=dict, max_length=_MAX_DIMS)
    sweeps: dict[int, tuple[float, float]] = Field(default_factory=dict, max_length=_MAX_DIMS)


def create_app(models: list[ExplorerModel], top_k: int = 10) -> FastAPI:
    """The FastAPI app serving ``models`` (addressed by their ``id``, their position in the list)."""
    app = FastAPI(title="betavae explorer", docs_url=None, redoc_url=None, openapi_url=None)
    page = (files("betavae.explorer") / "page.html").read_text(encoding="utf-8")

    def model_at(model_id: int) -> ExplorerModel:
        if not 0 <= model_id < len(models):
            raise RequestError(f"no model {model_id}; this server has 0..{len(models) - 1}", status=404)
        return models[model_id]

    @app.exception_handler(RequestError)
    def _refused(request: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.middleware("http")
    async def _limit_body(request: Request, call_next):
        length = request.headers.get("content-length", "0")
        if not length.isdigit() or int(length) > MAX_UPLOAD_BYTES + _MULTIPART_OVERHEAD:
            return JSONResponse({"detail": f"request body over {MAX_UPLOAD_BYTES // (1024 * 1024)} MB"},
                                status_code=413)
        return await call_next(request)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/api/health")
    def health() -> dict:
        return {"ok": True, "models": len(models)}

    @app.get("/api/models")
    def list_models() -> dict:
        return {"models": [m.summary(top_k) for m in models]}

    @app.post("/api/models/{model_id}/decode")
    def decode(model_id: int, body: Latent) -> Response:
        model = model_at(model_id)
        z = check_latent(body.z, model.trained.latent_dim)
        return Response(png_bytes(model.trained.decode(z)), media_type="image/png")

    @app.get("/api/models/{model_id}/prior")
    def prior(model_id: int, seed: int = 0) -> dict:
        model = model_at(model_id)
        generator = torch.Generator().manual_seed(seed % 2**63)
        return {"z": torch.randn(model.trained.latent_dim, generator=generator).tolist()}

    @app.get("/api/models/{model_id}/validation/{position}")
    def validation(model_id: int, position: int) -> dict:
        model = model_at(model_id)
        val = model.trained.data().val_indices
        if not 0 <= position < len(val):
            raise RequestError(f"validation position {position} is outside 0..{len(val) - 1}", status=404)
        return _encoded(model, model.trained.images(val[position : position + 1]))

    @app.post("/api/models/{model_id}/encode")
    def encode(model_id: int, file: UploadFile = File(...)) -> dict:
        model = model_at(model_id)
        data = file.file.read(MAX_UPLOAD_BYTES + 1)
        return _encoded(model, read_upload(data, model.trained.channels, model.trained.image_size))

    @app.post("/api/models/{model_id}/traverse")
    def traverse(model_id: int, body: Traversal) -> Response:
        model = model_at(model_id)
        z = check_latent(body.z, model.trained.latent_dim)
        strip = traversal_strip(model, z, body.dim, body.steps, body.low, body.high)
        return Response(strip, media_type="image/png")

    @app.post("/api/models/{model_id}/export")
    def export(model_id: int, body: Export) -> Response:
        model = model_at(model_id)
        data = export_zip(model, body.n, body.seed, body.fixed, body.sweeps)
        filename = re.sub(r"[^A-Za-z0-9._-]", "_", model.name) + "-samples.zip"
        headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
        return Response(data, media_type="application/zip", headers=headers)

    return app


def _encoded(model: ExplorerModel, image01: torch.Tensor) -> dict:
    """The posterior mean of one image, and the image as the model sees it (a PNG data URL)."""
    z = model.trained.encode(image01).mean[0].clamp(-LATENT_BOUND, LATENT_BOUND)
    return {"z": z.tolist(), "image": "data:image/png;base64," + base64.b64encode(png_bytes(image01)).decode()}
