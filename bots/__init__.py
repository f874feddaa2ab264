"""The Slack surface of flexus-ops: ``/flexus`` commands, Confirm buttons and approved password resets.

A thin surface over the registry and its gate: it parses (``commands``), renders (``blocks``) and
routes clicks (``actions``, ``views``); it never calls the cloud client and holds no safety logic of
its own. ``app.SlackBot`` builds the bolt app; ``app.main`` runs it (``flexus-ops slack``).
"""
