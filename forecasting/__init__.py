"""Forecasts of base load, PV and EV demand: models, backtests and the provider for env, MPC and serving.

Kept import-light (``evdlm --help`` imports the CLI): import submodules directly.
"""
