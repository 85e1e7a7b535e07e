"""`python -m server` is the `autoagent` command."""

from .cli import console_main

console_main()
