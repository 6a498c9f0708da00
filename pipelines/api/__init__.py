"""The REST API: API-triggered pipelines, chat, model serving with prediction logging."""
