"""The autoagent server: configuration, WebSocket API and command line."""
