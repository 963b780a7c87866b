"""corral's HTTP front end: Ollama's API over the scheduler."""

__version__ = "0.1.0"
