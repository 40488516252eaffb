"""People: users, roles, departments, personal API tokens, sign-in and its audit."""
