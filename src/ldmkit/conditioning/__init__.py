"""Conditioning: the null condition and condition dropout for classifier-free guidance (class_label.py)."""
