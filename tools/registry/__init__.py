"""The shared tool registry: one definition per Flexus L operation, called by every surface."""
