"""Networks: architecture builders (--model), loading saved members, running them over images."""
