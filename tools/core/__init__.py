"""The ground floor: the errors, the tool spec and its context, plans, previews, results, the caller and
the action states. Every other part of flexus-ops (config, cloud, gate, registry, sandbox, surfaces)
stands on it, and it imports none of them."""
