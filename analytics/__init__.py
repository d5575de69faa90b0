"""ClickHouse analytics: schema migrations, the receipts sink and the reach report."""
