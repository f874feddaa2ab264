"""The surface-neutral chat core: what any chat surface (Slack today; Teams or Matrix next) reuses as is.

- ``verbs``: the verb table (verb -> registry tool, positional arguments, flags) and the help made from it;
- ``parse``: a command's text to a typed request, refusing passwords in the text;
- ``answers``: a request answered by the registry (a read, a preview, the approvals list);
- ``follow``: a job's progress and an approval request's decision, followed at a chat's pace;
- ``text``: plain-text renderings of plans, results and listings.

Nothing here imports a chat SDK (a test holds it to that): a surface adds only its transport, its
identity checks and its rendering.
"""
