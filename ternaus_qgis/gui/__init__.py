"""Widgets: the dock (collects parameters), its controller (runs tasks), the settings dialog."""
