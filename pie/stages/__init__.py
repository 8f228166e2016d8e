"""Stage scripts outside the four original stage folders: quantize, cost, the toy criteria study."""
