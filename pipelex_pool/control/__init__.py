"""The control socket: protocol, server, client, and one small object per command."""
