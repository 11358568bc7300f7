"""The explorer's web app: one self-contained page and a JSON/PNG API over the served runs."""
from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from importlib.resources import files
from typing import Annotated, Literal

import torch
from fastapi import FastAPI, File, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import AllowInfNan, BaseModel, BeforeValidator, ConfigDict, Field, Strict

from betavae.explorer.guard import LOOPBACK_HOSTS, RequestGuard, normal_host
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
from betavae.samplers import SAMPLERS

_MAX_DIMS = 4096
_MULTIPART_OVERHEAD = 64 * 1024
JSON_BODY_LIMIT = 1024 * 1024  # the largest legitimate body (4096 dims swept and fixed) is ~0.4 MB
_UPLOAD_PATH = re.compile(r"/api/models/[^/]*/encode")


def body_limit(path: str) -> int:
    """The most body bytes a request to ``path`` may send: an upload, or a JSON request."""
    return MAX_UPLOAD_BYTES + _MULTIPART_OVERHEAD if _UPLOAD_PATH.fullmatch(path) else JSON_BODY_LIMIT


def _dim_key(value: object) -> object:
    """A dimension as a JSON object key: digits only ("3", not "3.0", " 3", "+3")."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 9:
        return int(value)
    raise ValueError('a dimension key must be written in digits, e.g. "3"')


# JSON numbers only: true, "1.5", null, NaN and Infinity are refused (422), not converted.
Number = Annotated[float, Strict(), AllowInfNan(False)]  # an integer is a number too
Integer = Annotated[int, Strict()]
DimKey = Annotated[int, BeforeValidator(_dim_key)]
SamplerKind = Literal[tuple(SAMPLERS)]  # betavae.samplers: "prior" (N(0, I)) or "gmm" (like the data)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Latent(_Body):
    """A latent vector."""

    z: list[Number] = Field(max_length=_MAX_DIMS)


class Traversal(Latent):
    """A latent vector and the dimension to run across ``steps`` values from ``low`` to ``high``."""

    dim: Integer
    steps: Integer = Field(9, ge=2, le=MAX_TRAVERSAL_STEPS)
    low: Number = -3.0
    high: Number = 3.0


class Export(_Body):
    """``n`` seeded samples of ``sampler``; ``fixed`` dims take one value, ``sweeps`` dims run from low to high
    (a fitted sampler draws the other dims conditioned on them)."""

    n: Integer = Field(ge=1, le=MAX_EXPORT)
    seed: Integer = Field(0, ge=0, le=2**31 - 1)
    fixed: dict[DimKey, Number] = Field(default_factory=dict, max_length=_MAX_DIMS)
    sweeps: dict[DimKey, tuple[Number, Number]] = Field(default_factory=dict, max_length=_MAX_DIMS)
    sampler: SamplerKind = "prior"


def create_app(models: list[ExplorerModel], top_k: int = 10, allow_hosts: Iterable[str] = ()) -> FastAPI:
    """The FastAPI app serving ``models`` (addressed by their ``id``, their position in the list).

    Requests must name this machine's loopback names (127.0.0.1, localhost, [::1], any port) or one
    of ``allow_hosts`` in their Host header; bodies are limited by :func:`body_limit`.
    """
    app = FastAPI(title="betavae explorer", docs_url=None, redoc_url=None, openapi_url=None)
    hosts = {*LOOPBACK_HOSTS, *(normal_host(h) or h for h in allow_hosts)}
    app.add_middleware(RequestGuard, allowed_hosts=hosts, body_limit=body_limit)
    page = (files("betavae.explorer") / "page.html").read_text(encoding="utf-8")

    def model_at(model_id: int) -> ExplorerModel:
        if not 0 <= model_id < len(models):
            raise RequestError(f"no model {model_id}; this server has 0..{len(models) - 1}", status=404)
        return models[model_id]

    @app.exception_handler(RequestError)
    def _refused(request: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Where and what, without the offending input (a NaN cannot be written as JSON, and a large
        # body is not echoed back).
        errors = [{key: e.get(key) for key in ("loc", "msg", "type")} for e in exc.errors()[:20]]
        return JSONResponse({"detail": errors}, status_code=422)

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
    def prior(model_id: int, seed: int = 0, sampler: SamplerKind = "prior") -> dict:
        """One seeded code: from N(0, I), or "like the data" (``sampler=gmm``, fitted on first use)."""
        model = model_at(model_id)
        z = model.sampler(sampler).sample(1, seed % 2**63)[0].clamp(-LATENT_BOUND, LATENT_BOUND)
        return {"z": z.tolist(), "sampler": sampler}

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
        data = export_zip(model, body.n, body.seed, body.fixed, body.sweeps, body.sampler)
        filename = re.sub(r"[^A-Za-z0-9._-]", "_", model.name) + "-samples.zip"
        headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
        return Response(data, media_type="application/zip", headers=headers)

    return app


def _encoded(model: ExplorerModel, image01: torch.Tensor) -> dict:
    """The posterior mean of one image, and the image as the model sees it (a PNG data URL)."""
    z = model.trained.encode(image01).mean[0].clamp(-LATENT_BOUND, LATENT_BOUND)
    return {"z": z.tolist(), "image": "data:image/png;base64," + base64.b64encode(png_bytes(image01)).decode()}
