"""The task inbox: for each role a person holds, what is waiting for them, each item a link to the page where it
is done. It reads many domains, through their own rules, and so sits above them (pyproject.toml contracts)."""
