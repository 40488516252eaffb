"""Model access: requests, grants, gateway keys and quotas."""
