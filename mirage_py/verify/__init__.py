"""verify: filled by later issues."""
