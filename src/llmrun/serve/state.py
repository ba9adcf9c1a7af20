"""What the routes share: the engine, the scheduler, the settings and the metrics of one server."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from llmrun.backends.local.engine import LocalEngine
from llmrun.serve.metrics import Metrics
from llmrun.serve.scheduler import Scheduler
from llmrun.serve.settings import ServeSettings


@dataclass(eq=False)
class ServerState:
    """One served model."""

    engine: LocalEngine
    scheduler: Scheduler
    settings: ServeSettings
    metrics: Metrics
    model_name: str
    #: A Llama 2 chat model without a chat template: chat uses the ``[INST] <<SYS>>`` format.
    llama2_chat: bool = False
    created: int = field(default_factory=lambda: int(time.time()))
