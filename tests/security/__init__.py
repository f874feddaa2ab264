"""Tests that attack: each file is one threat of SECURITY.md, tried the way an attacker would."""
