"""The admin surface as data: resource declarations and their use cases (see framework)."""
