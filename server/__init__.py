"""corral's HTTP front end: Ollama's API over the scheduler."""

__version__ = "0.1.0"
# The Ollama release whose API corral answers as, on /api/version: clients gate features on it
# (a version below theirs is refused: VS Code's Copilot wants 0.6.4 at least).
OLLAMA_VERSION = "0.32.15"
