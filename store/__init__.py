"""PostgreSQL storage: the models, engines, and every table's access, one module per concern."""
