"""The app's routers: ``sessions`` (REST), ``events`` (the WebSocket), ``ops`` (health, metrics, pages)."""
