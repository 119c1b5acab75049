"""OTLP intake: decoding, validation and the one export function behind gRPC and HTTP."""
