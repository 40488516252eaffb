"""The usage ledger's read side: rows, summaries and CSV per person, department and model."""
