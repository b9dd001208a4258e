"""The Processing provider ``ternaus`` and its algorithms (same code as the dock)."""
