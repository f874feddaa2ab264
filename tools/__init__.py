"""flexus-ops: operate Huawei Cloud Flexus L instances safely from an AI assistant, Slack or a shell."""

__version__ = "0.1.0"
