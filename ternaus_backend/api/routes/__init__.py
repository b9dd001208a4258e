"""The /v1 routers: health, models, jobs."""
