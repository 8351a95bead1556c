"""What a tuning leaves behind: records read back, the output folder, reports and exports."""
