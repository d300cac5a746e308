"""The search-space engine: hparams, dynamic layers, graph tracing, conversion and export."""
