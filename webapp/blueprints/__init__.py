"""HTTP entry points, one module per first segment of the URL (batches, articles, templates,
account, admin, api), plus sign-in (auth), machines (ops) and error pages (errors)."""
