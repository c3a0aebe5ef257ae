"""MLlm-DR core: pure model and signal code (no network, no asyncio).

A screening aid that explains itself, never a diagnosis.
"""

__version__ = "0.1.0"
