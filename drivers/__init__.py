"""Protocol drivers: each turns one poll of a device into one batch."""
