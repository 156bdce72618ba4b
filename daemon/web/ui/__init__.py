"""The operator's web UI: Jinja2 pages, the live MJPEG view, the event list over SSE, login and CSRF."""
