"""The console's pages: one module each, exposing `PAGE` (a `ConsolePage`), registered in
`api/console/__init__.py`."""
