"""Memory estimates and placement: pure functions over shapes and fleet views (no Django, no database)."""
