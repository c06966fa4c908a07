"""frontends: filled by later issues."""
