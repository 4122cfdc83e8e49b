"""CRM connectors: one module per CRM, the sync engine and write-back."""
