"""Replay testing: frozen sets of captured LLM calls, re-run with new parameters and compared."""
