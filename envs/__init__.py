"""The site core (configuration, scenarios, arrays, projection, costs) and the Gymnasium environment.

Importing this package registers ``evdlm/ChargingSite-v0`` with Gymnasium; the environment module itself
(pandas, the simulator) is only imported when an environment is made.
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

ENV_ID = "evdlm/ChargingSite-v0"

if ENV_ID not in registry:
    register(id=ENV_ID, entry_point="envs.env:ChargingSiteEnv")
