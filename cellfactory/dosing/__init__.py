"""Doses: prescriptions, the dose each unit carries, allocation, the endotoxin limit per patient, the delivered
dose (`cellfactory.dosing.bedside` passes the bedside check down to the units' administration)."""
