"""Find anything: one search box on every page finds a batch, source material, donor, unit, release certificate,
deviation or recipient from its identifier as typed or scanned, among the records the user may see."""
