"""``betavae explore``: a local web page to move through the latent space of trained runs.

:func:`betavae.explorer.state.load_models` loads the runs; :func:`betavae.explorer.app.create_app`
builds the FastAPI app (one inline page plus a JSON/PNG API); :mod:`betavae.explorer.cli` serves it.
"""
