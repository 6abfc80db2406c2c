"""Active health checks that open and close deployment breakers between requests."""
