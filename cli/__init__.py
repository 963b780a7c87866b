"""The `corral` command line: `serve` and `bootstrap` run the server (server/cli.py); every
other verb (run, create, list, ps, show, cp, rm, stop, pull, push) is a client of its HTTP API
at OLLAMA_HOST, as Ollama's cmd/ is of its api package. Entry point: `cli.main.main`."""
