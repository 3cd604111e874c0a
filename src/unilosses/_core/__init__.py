"""The machinery every loss shares: dispatch, validation, masking and reduction."""
