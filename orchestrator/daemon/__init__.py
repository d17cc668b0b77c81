"""The supervisor process: composition root, control API, health endpoint, sd_notify, warm idle."""
