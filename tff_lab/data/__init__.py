"""Client datasets: embedded offline data, partitioners, and conversion to TFF ClientData."""
