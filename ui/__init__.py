"""The Poise web UI (Gradio), mounted at `/ui` of the API app by `ui.app.mount_ui`."""
