"""Anthropic's Messages API, `POST /v1/messages`, as Ollama and llama-server serve it (so Claude
Code and the `anthropic` SDK work unchanged): each request is translated into the native chat
request (request.py), runs through the same submission as `/api/chat`, and its answer comes back
as a message or as Anthropic's stream events (reply.py); errors take Anthropic's shape
(errors.py)."""
