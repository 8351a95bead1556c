"""The search: spaces, SMAC3 by ask/tell and the study that makes every decision of the loop."""
