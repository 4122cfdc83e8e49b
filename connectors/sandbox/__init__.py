"""The sandbox CRM: a generated org, its CSV export and the local servers that serve it."""
