"""Runtime control of cameras over MQTT and HTTP, persisted in a state overlay on top of the YAML."""
