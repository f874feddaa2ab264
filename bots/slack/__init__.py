"""The Slack surface: ``/flexus`` commands, Confirm buttons and approved password resets.

``app`` builds bolt's AsyncApp and registers the ``listeners`` (``commands``, ``actions``, ``views``);
``blocks`` renders Block Kit; ``context`` finds out who is asking and where to answer; ``settings``
holds the tokens (from the environment) and the policy's ``[slack]`` table; ``logs`` keeps payloads out
of the libraries' logs. What is not about Slack lives in the chat core (``bots/chat``).
"""

from flexus_ops.core.errors import require_extra

# Before any module here imports bolt: without the [slack] extra, `flexus-ops slack` says what to install.
require_extra("the Slack bot", "slack", ("slack_bolt", "slack_sdk", "aiohttp"))
