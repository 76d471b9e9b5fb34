"""Telemetry shared by every transport: the metrics catalogue (names.py), which both the Prometheus exporter of
servers and the EMF metrics of Lambda read, so one metric has one name, unit and label set everywhere."""
