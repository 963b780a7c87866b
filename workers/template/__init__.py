"""Ollama's prompt templates, in one place (as Ollama's `template/` package serves its
`thinking/` and `tools/`): parse once (parse.py), analyse once (analysis.py: variables,
thinking tags, the tool-call tag, capabilities), the Go values templates see (godata.py), and
rendering under a budget (render.py). Store, server and workers all ask here; only the
worker's render processes (workers/render_process.py) render.
"""
