"""The HTTP service: API, dashboard, and the one polling scheduler per deployment (``trackcheck serve``)."""
