"""Spot fleet controller: keeps EC2 spot render slaves and batch nodes sized to demand."""
