"""PDF records (ReportLab): plain data in, PDF bytes out."""
