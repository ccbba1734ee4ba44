"""How a replica's process is made: the Spawner protocol, plain exec, the warm fork server, and what one spawn
allocates (notify socket, log file, metrics port)."""
