"""One module per `rtdecode` sub-command (see rtdecode/cli.py)."""
