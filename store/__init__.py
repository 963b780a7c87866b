"""The model store without HTTP: names, manifests and blobs, GGUF metadata, create."""
