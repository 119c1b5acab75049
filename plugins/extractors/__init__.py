"""Built-in extractors, one module per instrumentation convention."""
