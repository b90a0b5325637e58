"""Synthetic L3 cohorts: anatomy drawn as a label map, rendered as CT, written as real DICOM."""
