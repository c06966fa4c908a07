"""codegen: filled by later issues."""
