"""Site gateway: polls a property site's equipment and delivers every reading, losslessly."""

__version__ = "0.1.0"
