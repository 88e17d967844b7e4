"""A run folder: its config (one type for every parameter, recipes resolved once), on-disk schema,
atomic files and checkpoints, lifecycle (resume, finish, provenance) and the parts a Config builds."""
