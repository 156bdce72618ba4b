"""edgewatch daemon: config, sources, threads, queues, sinks, health, CLI."""
