"""HTTP entry points: pages and partials (web), sign-in (auth), JSON (api)."""
