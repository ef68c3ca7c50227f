"""evdlm: dynamic load management for EV charging sites."""

__version__ = "0.1.0"
