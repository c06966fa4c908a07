"""search: filled by later issues."""
