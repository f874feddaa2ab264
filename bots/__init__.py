"""The chat surfaces of flexus-ops: thin surfaces over the registry and its gate.

- ``chat/``: the surface-neutral core (the verb table, the parser, answers, following a job, plain text),
  what a second chat surface reuses unchanged; it imports no chat SDK.
- ``slack/``: the Slack surface (bolt): its listeners, Block Kit, settings and the app that runs them
  (``flexus-ops slack`` runs ``slack.app.main``).

No surface calls the cloud client or holds safety logic of its own: the gate decides.
"""
