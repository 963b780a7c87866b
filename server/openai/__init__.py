"""OpenAI-compatible endpoints under /v1: each request is translated into the native request,
run through the native path, and its answer translated back (framed as server-sent events when
streaming). Errors come out in OpenAI's shape (server/errors.py picks it by path)."""
