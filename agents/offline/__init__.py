"""The offline model (deterministic planner/verifier, date readers), its LLM provider,
the provider factory, and `autoagent sim`'s OpenAI-compatible simulator.

Public API; every other module in this package is private.
"""

from agents.offline._model import intent as offline_intent
from agents.offline._provider import (
    OfflineProvider,
)
from agents.offline._providers import (
    PROVIDERS,
    create_provider,
    open_provider,
)
from agents.offline._simulator import (
    DEFAULT_MODELS,
    LATENCY_PROFILES,
    Simulator,
    SimulatorOptions,
    SimulatorStatistics,
    serve_simulator,
)

__all__ = [
    "DEFAULT_MODELS",
    "LATENCY_PROFILES",
    "PROVIDERS",
    "OfflineProvider",
    "Simulator",
    "SimulatorOptions",
    "SimulatorStatistics",
    "create_provider",
    "offline_intent",
    "open_provider",
    "serve_simulator",
]
