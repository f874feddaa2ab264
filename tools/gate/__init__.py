"""The gate: preview, confirm, approve; the policy, the store and the audit log behind it."""
