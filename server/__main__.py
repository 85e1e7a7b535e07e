"""`python -m server` is the `autoagent` command."""

from server.cli import console_main

console_main()
