"""Worker processes: llama.cpp models, continuous batching, prompt rendering."""
